"""The chapter registry: validation with errors that name the field, claim ownership, the toc."""

from __future__ import annotations

import copy

import pytest

from precisionlab.engine import registry
from precisionlab.engine.registry import RegistryError
from precisionlab.provenance import find_root
from precisionlab.study.claims import catalog

TABLE = {
    "parts": [
        {"caption": "Formats", "chapters": [{"name": "01_formats", "claims": ["A-1"]}]},
        {"caption": "End", "chapters": [
            {"name": "02_more", "claims": ["B-2"], "inputs": ["data/x.csv"]},
            {"name": "03_ledger", "claims": ["C-3"], "inputs": ["data/claims.csv"],
             "ledger": True}]},
    ],
    "pages": ["references"],
    "untested": ["D-4"],
}


def changed(edit) -> dict:
    table = copy.deepcopy(TABLE)
    edit(table)
    return table


def test_registry_gives_order_owners_and_the_ledgers_inputs() -> None:
    reg = registry.parse(TABLE)
    assert reg.names == ["01_formats", "02_more", "03_ledger"]
    assert reg.owners() == {"A-1": "01_formats", "B-2": "02_more", "C-3": "03_ledger"}
    assert reg.chapter("02_more").part == "End"
    assert reg.inputs("02_more") == ["data/x.csv"]
    assert reg.inputs("03_ledger") == ["data/claims.csv", "data/verdicts/01_formats.json",
                                       "data/verdicts/02_more.json"]
    registry.check_claims(reg, ["A-1", "B-2", "C-3", "D-4"])


@pytest.mark.parametrize(("edit", "message"), [
    (lambda t: t["parts"][0].update(title="x"),
     r"^parts\[0\]\.title: unknown field; allowed: caption, chapters"),
    (lambda t: t["parts"][0].update(pages=["status"]),
     r"^parts\[0\]\.pages: pages are listed once, at the top level"),
    (lambda t: t["parts"][1]["chapters"][0].update(ledgr=True),
     r"^parts\[1\]\.chapters\[0\]\.ledgr: unknown field; allowed: name, claims, inputs, ledger"),
    (lambda t: t["parts"][1]["chapters"][1].update(ledger="yes"),
     r"^parts\[1\]\.chapters\[1\]\.ledger: must be one of true, false; got 'yes'"),
    (lambda t: t["parts"][0]["chapters"][0].update(name="1_formats"),
     r"^parts\[0\]\.chapters\[0\]\.name: must look like NN_topic"),
    (lambda t: t["parts"][0]["chapters"][0].update(claims="A-1"),
     r"^parts\[0\]\.chapters\[0\]\.claims: must be a list of non-empty strings"),
    (lambda t: t["parts"][0]["chapters"][0].pop("name"),
     r"^parts\[0\]\.chapters\[0\]\.name: required field missing"),
    (lambda t: t["parts"].reverse(), r"^chapters: names must be unique and in book order"),
    (lambda t: t["parts"][1]["chapters"][0]["claims"].append("A-1"),
     r"^claims: A-1 listed more than once"),
    (lambda t: t["untested"].append("C-3"), r"^claims: C-3 listed more than once"),
    (lambda t: t.update(chapters=[]), r"^chapters.yml\.chapters: unknown field"),
])
def test_invalid_registries_fail_naming_the_field(edit, message) -> None:
    with pytest.raises(RegistryError, match=message):
        registry.parse(changed(edit))


def test_every_claim_has_one_owner_or_is_untested() -> None:
    reg = registry.parse(TABLE)
    with pytest.raises(RegistryError, match=r"^claims: E-5 of data/claims.csv have no owner; "
                                            r"add each to the `claims` of the chapter"):
        registry.check_claims(reg, ["A-1", "B-2", "C-3", "D-4", "E-5"])
    with pytest.raises(RegistryError, match=r"^claims: D-4 in notebooks/chapters.yml are not"):
        registry.check_claims(reg, ["A-1", "B-2", "C-3"])


def test_unregistered_template_and_missing_template_are_errors(tmp_path) -> None:
    reg = registry.parse(TABLE)
    (tmp_path / "notebooks").mkdir()
    for name in [*reg.names, "10_new"]:
        (tmp_path / "notebooks" / f"{name}.ipynb").write_text("{}")
    with pytest.raises(RegistryError, match=r"^chapter: '10_new' is not in notebooks/chapters.yml;"
                                            r" add `- name: 10_new`"):
        registry.check_templates(reg, tmp_path)
    (tmp_path / "notebooks" / "10_new.ipynb").unlink()
    registry.check_templates(reg, tmp_path)
    (tmp_path / "notebooks" / "02_more.ipynb").unlink()
    with pytest.raises(RegistryError, match=r"^chapters: 02_more in .* have no template"):
        registry.check_templates(reg, tmp_path)


def test_profiles_name_registered_chapters_and_known_profiles() -> None:
    reg = registry.parse(TABLE)
    assert registry.check_profiles(reg, {"01_formats": {"smoke": {"n": 1}}}) == {
        "01_formats": {"smoke": {"n": 1}}}
    with pytest.raises(RegistryError, match=r"^chapter: '09_gone' is not in"):
        registry.check_profiles(reg, {"09_gone": {"smoke": {}}})
    with pytest.raises(RegistryError, match=r"^profiles.yml: 01_formats.tpu: must be one of "
                                            r"smoke, gpu"):
        registry.check_profiles(reg, {"01_formats": {"tpu": {}}})


def test_toc_lists_parts_chapters_and_pages() -> None:
    text = registry.toc(registry.parse(changed(lambda t: t["parts"][0].update(caption="A: B"))))
    assert text.splitlines()[1:] == [
        "format: jb-book", "root: book/intro", "parts:",
        '  - caption: "A: B"', "    numbered: true", "    chapters:",
        "      - file: book/01_formats",
        "  - caption: End", "    numbered: true", "    chapters:",
        "      - file: book/02_more", "      - file: book/03_ledger",
        # pages go last, so chapter NN is numbered NN in the book
        "  - caption: Beyond the chapters", "    numbered: true", "    chapters:",
        "      - file: book/references"]


def test_the_projects_registry_toc_templates_and_claims_agree() -> None:
    """The committed _toc.yml is the generated one; every claim has one owner."""
    import yaml

    root = find_root()
    reg = registry.load(root)
    assert (root / "_toc.yml").read_text() == registry.toc(reg), "run `precisionlab toc`"
    registry.check_templates(reg, root)
    registry.check_claims(reg, list(catalog(root)))
    registry.check_profiles(reg, yaml.safe_load((root / "notebooks" / "profiles.yml").read_text()))
    assert sum(c.ledger for c in reg.chapters) == 1


HEADLINE = [{"name": "accuracy {task}", "file": "final.csv", "value": "accuracy",
             "where": {"precision": "16-mixed", "bits": 8}},
            {"name": "loss", "file": "runs.csv", "value": "loss"}]


def with_headline(value) -> dict:
    return changed(lambda t: t["parts"][0]["chapters"][0].update(headline=value))


def test_headline_entries_parse_into_the_chapter() -> None:
    reg = registry.parse(with_headline(HEADLINE))
    assert reg.chapter("01_formats").headline == (
        registry.Headline("accuracy {task}", "final.csv", "accuracy",
                          (("precision", "16-mixed"), ("bits", 8))),
        registry.Headline("loss", "runs.csv", "loss"))
    assert reg.chapter("02_more").headline == ()
    assert registry.parse(with_headline(None)).chapter("01_formats").headline == ()


def headline_edit(k: int, **fields):
    """A headline whose entry `k` has `fields` changed (None removes the field)."""
    entries = copy.deepcopy(HEADLINE)
    for field, value in fields.items():
        if value is None:
            del entries[k][field]
        else:
            entries[k][field] = value
    return entries


AT = r"^parts\[0\]\.chapters\[0\]\.headline"


@pytest.mark.parametrize(("value", "message"), [
    ({"name": "x", "file": "x.csv", "value": "v"}, AT + r": must be a list of mappings with "
                                                   r"fields name, file, value, where; got"),
    (["loss"], AT + r"\[0\]: must be a mapping with fields name, file, value, where"),
    (headline_edit(1, name=None), AT + r"\[1\]\.name: required field missing"),
    (headline_edit(1, file=None), AT + r"\[1\]\.file: required field missing"),
    (headline_edit(0, value=None), AT + r"\[0\]\.value: required field missing"),
    (headline_edit(1, column="loss"), AT + r"\[1\]\.column: unknown field; allowed: name, "
                                           r"file, value, where"),
    (headline_edit(1, value=3), AT + r"\[1\]\.value: must be a non-empty string; got 3"),
    (headline_edit(0, where=["precision", "16-mixed"]), AT + r"\[0\]\.where: must map column "
                                                            r"names to single values"),
    (headline_edit(0, where={"bits": [4, 8]}), AT + r"\[0\]\.where: must map column names"),
    (headline_edit(1, file="runs.json"), AT + r"\[1\]\.file: must be the name of a CSV file"),
    (headline_edit(1, file="../02_more/runs.csv"), AT + r"\[1\]\.file: must be the name of a "
                                                        r"CSV file"),
    (headline_edit(0, name="accuracy {task"), AT + r"\[0\]\.name: not a valid name template"),
    (headline_edit(0, name="accuracy {}"), AT + r"\[0\]\.name: each \{placeholder\} must name "
                                                r"a column"),
])
def test_invalid_headlines_fail_naming_the_field(value, message) -> None:
    with pytest.raises(RegistryError, match=message):
        registry.parse(with_headline(value))


def test_depends_on_the_earlier_chapters_whose_outputs_the_inputs_read() -> None:
    reg = registry.load(find_root())
    assert reg.depends_on("01_number_formats") == []
    assert reg.depends_on("03_loss_scaling") == ["01_number_formats"]
    assert reg.depends_on("15_low_precision_training") == ["02_mixed_precision"]
    assert reg.depends_on("16_claims_ledger") == reg.before("16_claims_ledger")


def test_depends_on_matches_globs_and_only_earlier_chapters() -> None:
    def inputs(t: dict) -> None:
        t["parts"][1]["chapters"][0]["inputs"] = ["data/0*/x.csv", "data/claims.csv"]
        t["parts"][1]["chapters"][1]["inputs"] = ["data/verdicts/01_*.json", "data/*"]
        t["parts"][1]["chapters"][1]["ledger"] = False
    reg = registry.parse(changed(inputs))
    assert reg.depends_on("02_more") == ["01_formats"]  # 02 and 03 match 0*, but are not earlier
    assert reg.depends_on("03_ledger") == ["01_formats"]  # data/* names no chapter folder
    assert registry.parse(TABLE).depends_on("03_ledger") == ["01_formats", "02_more"]
    assert registry.parse(TABLE).depends_on("02_more") == []
