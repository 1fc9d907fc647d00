"""Generates the README's configuration table from the Settings fields; ``--check`` fails when stale."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pydantic import AliasChoices

from dify_sandbox.config import OFFICIAL_YAML_KEYS, Settings

BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def _env_name(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices) and isinstance(alias.choices[0], str):
        return alias.choices[0]
    return f"SANDBOX_{name.upper()}"


def _default(name: str) -> str:
    if name == "workers":
        return "CPU count"
    field = Settings.model_fields[name]
    value = field.get_default(call_default_factory=True)
    if hasattr(value, "get_secret_value"):
        value = value.get_secret_value()
    if isinstance(value, list):
        value = ",".join(str(item) for item in value)
    return "" if value is None else str(value)


def table() -> str:
    """The Markdown table: env var, YAML key, default, meaning."""
    yaml_keys = {env: key for key, env in OFFICIAL_YAML_KEYS.items()}
    rows = ["| env var | YAML key | default | meaning |", "|---|---|---|---|"]
    for name, field in Settings.model_fields.items():
        env = _env_name(name)
        yaml_key = yaml_keys.get(env, f"sandbox.{name}")
        description = (field.description or "").replace("|", "\\|")
        rows.append(f"| `{env}` | `{yaml_key}` | `{_default(name)}` | {description} |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("readme", type=Path)
    parser.add_argument("--check", action="store_true", help="fail if the table in the file is stale")
    args = parser.parse_args()
    text = args.readme.read_text(encoding="utf-8")
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        print(f"{args.readme}: markers {BEGIN} / {END} not found", file=sys.stderr)
        return 1
    updated = f"{head}{BEGIN}\n{table()}\n{END}{tail}"
    if args.check:
        if updated != text:
            print(f"{args.readme}: configuration table is stale; run scripts/config_table.py {args.readme}")
            return 1
        return 0
    args.readme.write_text(updated, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
