"""`chute schema` (issue #15): the JSON Schema editors use to check and complete a config as it is typed."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
import yaml

from chute.cli import main

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "config.example.yaml"


@pytest.fixture(scope="module")
def schema() -> dict:
    """What `chute schema` prints, as an editor's language server reads it."""
    return _schema()


def _schema() -> dict:
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["schema"]) == 0
    return json.loads(out.getvalue())


def _errors(schema: dict, config: object) -> list[str]:
    validator = jsonschema.validators.validator_for(schema)(schema)
    return sorted(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(config))


def test_the_schema_is_valid_draft_07(schema):
    # yaml-language-server (VS Code's YAML extension and others) validates draft-07 fully.
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(schema)
    assert jsonschema.validators.validator_for(schema) is jsonschema.Draft7Validator


@pytest.mark.parametrize(
    "config", ["config.example.yaml", "systemd/config.yaml", "tests/unit/definitions/_base/config.yaml"]
)
def test_the_shipped_configs_validate(schema, config):
    assert _errors(schema, yaml.safe_load((REPO / config).read_text())) == []


def test_a_typo_in_a_key_is_rejected(schema):
    config = yaml.safe_load(EXAMPLE.read_text())
    config["worker"] = config.pop("workers")
    config["inboxes"][0]["setle"] = config["inboxes"][0].pop("settle")
    errors = _errors(schema, config)
    assert len(errors) == 2
    assert errors[0].startswith(": Additional properties are not allowed ('worker' was unexpected)")
    assert errors[1].startswith("inboxes.0: Additional properties are not allowed ('setle' was unexpected)")


def test_notify_and_metrics_are_described(schema):
    good = {
        "notify": [
            {
                "url": "ntfy://ntfy.example.com/chute",
                "events": ["run.quarantined"],
                "inboxes": ["/srv/media/inbox/example"],
            }
        ],
        "metrics": {"textfile": "/var/lib/node_exporter/chute.prom"},
    }
    assert _errors(schema, good) == []
    assert _errors(schema, {"notify": [{"url": "json://h/x", "events": ["run.done"]}]}) == [
        "notify.0.events.0: 'run.done' is not one of ['run.published', 'run.quarantined', 'inbox.unavailable', "
        "'daemon.error']"
    ]
    assert len(_errors(schema, {"metrics": {"listen": "127.0.0.1:9464", "textfile": "/x.prom"}})) == 1
    assert len(_errors(schema, {"metrics": {}})) == 1
    assert len(_errors(schema, {"notify": [{"events": ["run.published"]}]})) == 1  # no url


def test_the_example_config_starts_with_the_editor_modeline():
    first = EXAMPLE.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=chute.schema.json"
