"""The tables of a workspace's metadata database, as SQLAlchemy Core (the shape at the newest migration).

The migrations in ``pex/store/migrations/versions`` create and change these tables; this module is what the
code queries. The two must agree: tests/store/test_store_migrations.py compares a database migrated to head with
:data:`metadata`. Change a table here only together with a new migration.

The serving tables (revision 0002) are append-only: ``decisions`` (one row per served decision, many
serving processes inserting at once with no workspace lock and no version allocation), ``outcomes`` (metric
values reported for units), ``releases`` (every publish and rollback, whose replay gives the live version)
and ``tokens`` (API tokens, of which only a hash is kept; revoking sets ``revoked_at``, the one UPDATE).
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

# made by revision 0001 with the one row schema_version = "1"; the Alembic revision in alembic_version is the
# version that counts, and nothing reads this table (dropping it would take a revision of its own)
schema_info = sa.Table(
    "schema_info", metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

experiments = sa.Table(
    "experiments", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False, default=""),
    sa.Column("owner", sa.String(256), nullable=False, default=""),
    sa.Column("spec", sa.JSON, nullable=False),
    # the dataset version that commands use by default: the one ingested last,
    # also when that ingest found identical data already stored
    sa.Column("current_dataset", sa.String(32), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

dataset_versions = sa.Table(
    "dataset_versions", metadata,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("content_hash", sa.String(64), nullable=False),
    sa.Column("artifact", sa.String(512), nullable=False),
    sa.Column("n_units", sa.Integer, nullable=False),
    sa.Column("n_dropped", sa.Integer, nullable=False),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("spec", sa.JSON, nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("experiment", "version", name="uq_dataset_version"),
    sa.UniqueConstraint("experiment", "content_hash", name="uq_dataset_content"),
)

analyses = sa.Table(
    "analyses", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("dataset_id", sa.String(32), sa.ForeignKey("dataset_versions.id"), nullable=False),
    sa.Column("result", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

fits = sa.Table(
    "fits", metadata,
    sa.Column("id", sa.String(48), primary_key=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("dataset_id", sa.String(32), sa.ForeignKey("dataset_versions.id"), nullable=False),
    sa.Column("learner", sa.String(16), nullable=False),
    sa.Column("artifact", sa.String(512), nullable=False),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

policies = sa.Table(
    "policies", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("fit_id", sa.String(48), sa.ForeignKey("fits.id"), nullable=True),
    sa.Column("document", sa.JSON, nullable=False),
    sa.Column("evaluation", sa.JSON, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.UniqueConstraint("name", "version", name="uq_policy_version"),
)

# one row per `pex run`: its summary.json, which `pex report` renders again later, and (revision 0004) what the
# run history of its dataset version reads: the settings (RunOptions.to_dict()), the reason given, the policy
# version the run recommends (``policy``, ``policy_version``), its own choice (``own_*``, the same unless the
# recommendation is an earlier run's) and ``bound_to``, the id of the run whose recommendation it carries. Rows
# from before 0004 have no dataset_id and are no part of any history.
runs = sa.Table(
    "runs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("fit_id", sa.String(48), sa.ForeignKey("fits.id"), nullable=True),
    sa.Column("summary", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("dataset_id", sa.String(32), nullable=True),
    sa.Column("settings", sa.JSON, nullable=True),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("policy", sa.String(128), nullable=True),
    sa.Column("policy_version", sa.Integer, nullable=True),
    sa.Column("own_policy", sa.String(128), nullable=True),
    sa.Column("own_version", sa.Integer, nullable=True),
    sa.Column("bound_to", sa.Integer, nullable=True),
    sa.Index("ix_runs_dataset", "experiment", "dataset_id"),
)

# Every decision a server made, appended by its decision-log flusher. ``decision_id`` is what the response
# carried; ``features`` are the features the policy read, as the request sent them. No index but the key: a
# server appends up to 100,000 rows a second, and each index would cost as much again per row (measured 4 us a
# row without, 12 us with the three obvious ones), while the readers (`pex decisions`) scan an experiment's
# rows anyway. ``decision_id`` is unique by construction (pex.services.serving.DecisionIds), not by a constraint.
decisions = sa.Table(
    "decisions", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decision_id", sa.String(32), nullable=False),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("experiment", sa.String(64), nullable=True),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("unit", sa.String(256), nullable=False),
    sa.Column("arm", sa.String(128), nullable=False),
    sa.Column("propensity", sa.Float, nullable=False),
    sa.Column("features", sa.JSON, nullable=False),
    # the route of a routing policy that decided (an online round's candidate policy); empty for other kinds
    sa.Column("route", sa.String(128), nullable=True),
    # (revision 0006) true when the live version could not be loaded and the policy's fallback arm was served instead
    sa.Column("fallback", sa.Boolean, nullable=True),
)

# Metric values reported for units after their decisions (`POST /api/v1/outcomes`, `pex outcomes`).
outcomes = sa.Table(
    "outcomes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("unit", sa.String(256), nullable=False),
    sa.Column("metric", sa.String(64), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_outcomes_experiment_unit", "experiment", "unit"),
)

# Publish and rollback events per policy name, in order; replaying them gives the live version.
releases = sa.Table(
    "releases", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # publish | rollback
    sa.Column("from_version", sa.Integer, nullable=True),
    sa.Column("to_version", sa.Integer, nullable=False),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    # (revision 0005) why a publish happened outside the normal rule, e.g. "uncertified: confirmed by token:alice
    # in the UI"; empty for ordinary publishes and rollbacks
    sa.Column("note", sa.Text, nullable=True),
    # (revision 0006) the figures behind an automatic rollout step (the watcher's measurement that advanced, completed
    # or rolled back a canary); empty for releases made by hand
    sa.Column("details", sa.JSON, nullable=True),
    sa.Index("ix_releases_policy", "policy"),
)

# API tokens: the public id, and a SHA-256 of the secret part (the secret itself is shown once and never stored).
tokens = sa.Table(
    "tokens", metadata,
    sa.Column("id", sa.String(16), primary_key=True),
    sa.Column("name", sa.String(128), nullable=False),
    sa.Column("scope", sa.String(16), nullable=False),
    sa.Column("secret_hash", sa.String(64), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
)

# The online loop (revision 0003): one row per loop with its Ax experiment (Ax's own JSON snapshot, rewritten after
# every ask and tell), and one row per round: the routing policy version serving it, its arms and, once
# completed, the lifts measured from the decision log.
online_loops = sa.Table(
    "online_loops", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("experiment", sa.String(64), sa.ForeignKey("experiments.name"), nullable=False),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("ax_state", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

online_rounds = sa.Table(
    "online_rounds", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("loop", sa.String(64), sa.ForeignKey("online_loops.name"), nullable=False),
    sa.Column("round", sa.Integer, nullable=False),
    sa.Column("policy_version", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # open | complete
    sa.Column("arms", sa.JSON, nullable=False),
    sa.Column("results", sa.JSON, nullable=True),
    sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
    sa.UniqueConstraint("loop", "round", name="uq_online_round"),
)

# Background jobs (revision 0005): what the UI asks the worker to do (a pipeline run, an online round), claimed by
# one worker at a time (pex.store.jobs), with its progress, a tail of its log, its outcome and a heartbeat. A
# job's worker is "host:pid", so that the next worker can tell a dead one's jobs (pex.services.worker).
jobs = sa.Table(
    "jobs", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("kind", sa.String(32), nullable=False),  # run | online_start | online_complete
    sa.Column("experiment", sa.String(64), nullable=True),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # queued | running | succeeded | failed | cancelled | interrupted
    sa.Column("stage", sa.String(32), nullable=True),
    sa.Column("message", sa.Text, nullable=True),
    sa.Column("fraction", sa.Float, nullable=False),
    sa.Column("log_tail", sa.JSON, nullable=False),  # the last lines of the job's log (pex.store.jobs.LOG_LINES)
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("hint", sa.Text, nullable=True),
    sa.Column("run_id", sa.Integer, nullable=True),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("worker", sa.String(128), nullable=True),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    sa.Index("ix_jobs_status", "status", "id"),
)

# The monitor's hourly counts (revision 0005), kept by the worker from the decision log and the outcomes
# (pex.store.rollups) so that a page view never scans those: decisions per policy version, arm and hour (UTC, start
# of the hour), outcomes per experiment, metric and hour; ``rollup_marks`` holds, per rollup, the id of the last
# row counted (and since when a gap in the ids has been waited for).
decision_hours = sa.Table(
    "decision_hours", metadata,
    sa.Column("policy", sa.String(128), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("arm", sa.String(128), primary_key=True),
    sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

outcome_hours = sa.Table(
    "outcome_hours", metadata,
    sa.Column("experiment", sa.String(64), primary_key=True),
    sa.Column("metric", sa.String(64), primary_key=True),
    sa.Column("hour", sa.DateTime(timezone=True), primary_key=True),
    sa.Column("count", sa.Integer, nullable=False),
)

rollup_marks = sa.Table(
    "rollup_marks", metadata,
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("last_id", sa.Integer, nullable=False),
    sa.Column("gap_since", sa.DateTime(timezone=True), nullable=True),
)

# (revision 0006) Staged rollouts (pex.services.rollout): a new version served to a canary share of the units under the
# policy's stable name, the version live before to the rest, and an all-control holdout; ``steps`` are the canary
# shares of the ramp, ``step`` the index of the current one, ``versions`` the routing versions published per step,
# ``last_check`` the watcher's latest measurement. ``status``: running | complete | rolled_back | stopped.
rollouts = sa.Table(
    "rollouts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("experiment", sa.String(64), nullable=True),
    sa.Column("new_version", sa.Integer, nullable=False),
    sa.Column("base_version", sa.Integer, nullable=True),
    sa.Column("routing_key", sa.String(32), nullable=False),
    sa.Column("holdout", sa.Float, nullable=False),
    sa.Column("steps", sa.JSON, nullable=False),
    sa.Column("step", sa.Integer, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("settings", sa.JSON, nullable=False),
    sa.Column("versions", sa.JSON, nullable=False),
    sa.Column("last_check", sa.JSON, nullable=True),
    sa.Column("actor", sa.String(256), nullable=False),
    sa.Column("reason", sa.Text, nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Index("ix_rollouts_policy", "policy", "id"),
)

# (revision 0006) What `pex monitor` found for a live policy version (drift per feature, staleness, arm shares, live
# guardrails), newest last: /metrics and `pex check` read the newest instead of recomputing it per scrape.
monitor_reports = sa.Table(
    "monitor_reports", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("policy", sa.String(128), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("experiment", sa.String(64), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("report", sa.JSON, nullable=False),
    sa.Index("ix_monitor_reports_policy", "policy", "id"),
)

# Alembic's own bookkeeping (the revision a database is at), created and written by Alembic, never by
# ``create_all``. It is declared here, in the shape Alembic gives it, only so that ``metadata.drop_all``
# empties a database completely: a database left with its revision row but without the tables would be
# refused as damaged.
VERSION_TABLE = "alembic_version"
alembic_version = sa.Table(
    VERSION_TABLE, metadata,
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name="alembic_version_pkc"),
)

# the tables pex owns (all but Alembic's), for recognising a workspace
PEX_TABLES = frozenset(t.name for t in metadata.sorted_tables) - {VERSION_TABLE}
