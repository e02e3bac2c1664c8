"""Use cases over the store, the ones the CLI (and later the web app) call: one function per thing a user does."""
