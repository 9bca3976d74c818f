"""A manifest scripts can rely on: a schema_version, a JSON Schema shipped in the package
(every manifest the tests write is validated against it: tests/conftest.py sets
EDGEKILN_CHECK_MANIFESTS), typed gate records, and `edgekiln.load(OUT)` for the typed run."""

import json

import jsonschema
import pytest

import edgekiln
from edgekiln.engine.manifest import SCHEMA_VERSION, check_against_json_schema
from edgekiln.engine.manifest_schema import SCHEMA_FILE, json_schema
from edgekiln.gates import GATE_RECORD_FIELDS, GATE_STATUSES, BudgetCheck, GateCheck, NotChecked


def test_the_shipped_json_schema_is_the_one_the_code_describes():
    shipped = json.loads(SCHEMA_FILE.read_text())
    assert shipped == json.loads(json.dumps(json_schema())), (
        "manifest.schema.json is stale: run `python -m edgekiln.engine.manifest_schema` and commit it")
    jsonschema.Draft202012Validator.check_schema(shipped)
    gate = shipped["$defs"]["GateRecord"]
    assert set(GATE_RECORD_FIELDS) <= set(gate["required"])
    assert gate["properties"]["status"]["enum"] == list(GATE_STATUSES)


def test_the_published_artifact_record_declares_every_field_an_artifact_publishes():
    """Artifact (built by export) and ArtifactRecord (read back from the manifest) stay in
    step: a field added to one and not the other would be published untyped, or read as a
    figure no artifact has."""
    import dataclasses

    from edgekiln.targets.artifact import UNPUBLISHED, Artifact, ArtifactRecord

    published = {f.name for f in dataclasses.fields(Artifact)} - set(UNPUBLISHED)
    assert published == set(ArtifactRecord.model_fields)
    record = Artifact(target="phone", format="tflite", file="model.tflite", test_top1=[1, 2]).to_dict(published=True)
    assert not set(UNPUBLISHED) & set(record)
    assert ArtifactRecord.model_validate(record, strict=True).target == "phone"


def test_a_run_writes_a_versioned_manifest_whose_gates_are_typed_records(run):
    _, _, manifest = run
    assert manifest["schema_version"] == SCHEMA_VERSION
    check_against_json_schema(manifest)
    assert manifest["gates"]
    for record in manifest["gates"]:
        assert set(GATE_RECORD_FIELDS) <= set(record) and record["status"] in GATE_STATUSES
        assert record["subject_type"] in ("stage", "target") and " " not in record["subject"]
        if record["status"] != "not_checked":
            assert (record["status"] == "passed") == record["passed"]
            assert record["passed"] == (record["decided_on"] <= record["limit"] + 1e-9)


def test_the_schema_refuses_what_a_script_could_not_rely_on(run):
    _, _, manifest = run
    for broken in ({**manifest["gates"][0], "status": "maybe"},
                   {k: v for k, v in manifest["gates"][0].items() if k != "limit"},
                   {**manifest["gates"][0], "value": "3.1"}):
        with pytest.raises(jsonschema.ValidationError):
            check_against_json_schema({**manifest, "gates": [broken]})
    with pytest.raises(jsonschema.ValidationError):
        check_against_json_schema({k: v for k, v in manifest.items() if k != "schema_version"})


def test_load_returns_the_typed_run(run):
    root, result, manifest = run
    finished = edgekiln.load(root / "out")
    assert finished.schema_version == SCHEMA_VERSION and finished.passed == manifest["passed"]
    assert finished.verdict == manifest["verdict"] and finished.unchecked == manifest["unchecked"]
    assert [a.target for a in finished.artifacts] == [a["target"] for a in manifest["artifacts"]]
    assert finished.record.artifacts[0].test_accuracy == manifest["artifacts"][0]["test_accuracy"]
    assert all(isinstance(g, (GateCheck, BudgetCheck, NotChecked)) for g in finished.gates)
    assert len(finished.gates) == len(manifest["gates"])
    # each gate object gives back its record: the typed view loses nothing a script reads
    for gate, record in zip(finished.gates, manifest["gates"]):
        again = gate.to_dict()
        assert {k: again[k] for k in GATE_RECORD_FIELDS} == {k: record[k] for k in GATE_RECORD_FIELDS}
    assert finished.failed_gates == [g for g in finished.gates if g.passed is False]


def test_load_names_a_missing_or_broken_manifest(tmp_path):
    with pytest.raises(edgekiln.InputError, match="manifest.json does not exist"):
        edgekiln.load(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"schema_version": 2, "config": {}, "artifacts": [],
                                                        "gates": [{"kind": "accuracy"}]}))
    with pytest.raises(edgekiln.InputError, match=r"not a valid edgekiln manifest: verdict: missing; .*gates\[0\].subject_type: missing"):
        edgekiln.load(tmp_path)
