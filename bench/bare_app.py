"""The baseline of bench/serve.py: a bare Flask JSON endpoint (parse the body, answer a small object)."""

from __future__ import annotations

from flask import Flask, jsonify, request

app = Flask("bare")


@app.post("/decide")
def decide():
    """Echo the unit with a fixed arm: JSON in, JSON out, nothing else."""
    body = request.get_json(force=True)
    return jsonify({"arm": "control", "unit": body.get("unit")})
