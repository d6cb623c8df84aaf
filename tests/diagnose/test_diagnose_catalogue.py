"""The signature catalogue: it validates, covers every category, and its examples hold."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from runbook_lib.diagnose import CATEGORIES, CatalogueError, diagnose_text, load_catalogue, parse_catalogue
from runbook_lib.diagnose.catalogue import DEFAULT_PATH
from runbook_lib.errors import RunbookError

CATALOGUE = load_catalogue()
SIGNATURES = list(CATALOGUE)


def test_bundled_catalogue_validates_and_is_large_enough() -> None:
    assert len(CATALOGUE) >= 40


def test_every_category_is_covered() -> None:
    by_cat = CATALOGUE.by_category()
    assert set(by_cat) == set(CATEGORIES)
    assert all(by_cat[c] for c in CATEGORIES), {c: ids for c, ids in by_cat.items() if not ids}


def test_the_important_categories_have_several_signatures() -> None:
    by_cat = CATALOGUE.by_category()
    for cat in ("cpu-incompatible", "libvirt-unreachable", "libvirt-auth", "shared-storage", "storage-permissions", "capacity"):
        assert len(by_cat[cat]) >= 3, cat


def test_every_entry_names_a_public_reference_and_a_phase() -> None:
    for sig in SIGNATURES:
        assert re.search(r"[\w.-]+/[\w.-]+ \S+|https?://", sig.reference), sig.id
        assert f"`{sig.phase}`" in sig.remediation, sig.id


@pytest.mark.parametrize("sig", SIGNATURES, ids=lambda s: s.id)
def test_positive_examples_yield_the_signature_first(sig) -> None:  # type: ignore[no-untyped-def]
    for example in sig.positive:
        matches = diagnose_text(example)
        assert matches, f"{sig.id}: nothing matched {example!r}"
        assert matches[0].signature == sig.id, f"{sig.id}: {example!r} matched {matches[0].signature} first"
        assert matches[0].category == sig.category


@pytest.mark.parametrize("sig", SIGNATURES, ids=lambda s: s.id)
def test_negative_examples_do_not_yield_the_signature(sig) -> None:  # type: ignore[no-untyped-def]
    for example in sig.negative:
        assert sig.id not in [m.signature for m in diagnose_text(example)], example


def _entry(**overrides: object) -> dict:
    entry = {
        "id": "some-failure",
        "category": "capacity",
        "patterns": ["No valid host was found\\."],
        "sources": ["nova-conductor"],
        "cause": "no host fits",
        "remediation": "pick another host in `migrate`",
        "phase": "migrate",
        "reference": "openstack/nova nova/exception.py (NoValidHost)",
        "examples": {"positive": ["No valid host was found. x"], "negative": ["Found 2 valid hosts"]},
    }
    entry.update(overrides)
    return entry


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"colour": "red"}, "unknown key(s) colour"),
        ({"category": "network"}, "category 'network' is not one of"),
        ({"patterns": ["No valid (host"]}, "not a valid regular expression"),
        ({"id": "Some_Failure"}, "not kebab-case"),
        ({"phase": "configure"}, "phase 'configure' is not one of"),
        ({"sources": ["nova-compute"]}, "unknown source(s) nova-compute"),
        ({"examples": {"positive": ["x"]}}, "needs at least one 'positive' and one 'negative'"),
        ({"patterns": []}, "'patterns' must not be empty"),
    ],
)
def test_invalid_entries_are_rejected_with_a_clear_error(overrides: dict, message: str) -> None:
    with pytest.raises(CatalogueError) as err:
        parse_catalogue({"signatures": [_entry(**overrides)]}, path="test.yaml")
    assert message in str(err.value)
    assert "test.yaml" in str(err.value) and isinstance(err.value, RunbookError)


def test_missing_keys_and_duplicate_ids_are_rejected() -> None:
    entry = _entry()
    del entry["cause"]
    with pytest.raises(CatalogueError, match="missing key"):
        parse_catalogue({"signatures": [entry]})
    with pytest.raises(CatalogueError, match="duplicate id"):
        parse_catalogue({"signatures": [_entry(), _entry()]})
    with pytest.raises(CatalogueError, match="exactly one key"):
        parse_catalogue([_entry()])


def test_load_reports_unreadable_and_non_yaml_files(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="cannot read"):
        load_catalogue(tmp_path / "absent.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("signatures: [\n", encoding="utf-8")
    with pytest.raises(CatalogueError, match="not valid YAML"):
        load_catalogue(bad)


def test_bundled_file_is_plain_safe_yaml() -> None:
    data = yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))
    assert [e["id"] for e in data["signatures"]] == [s.id for s in SIGNATURES]
