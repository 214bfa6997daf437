"""The book's Sphinx extension: clean page scripts, the execution status table, downloads.

- Every page's scripts exactly once. Jupyter Book 1 registers sphinx-thebe's configuration
  script once per read of the sources, so a page can carry it twice and the browser reports
  "Identifier 'THEBE_JS_URL' has already been declared"; the browser test (tests/browser) fails
  on any console error.
- The ``chapter-status`` directive: a table of every registered chapter as executed (profile,
  wall time, machine, date, input key) and whether it is current, computed at build time from
  the provenance record of each executed chapter and the runner's own input key.
- A "Downloads" box on every chapter page: the template (to rerun), the executed notebook and a
  zip of the results it wrote, copied into the HTML build under ``_downloads/<chapter>/``.

Chapters do not import this module, so editing it makes no chapter stale.
"""

from __future__ import annotations

import io
import posixpath
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from docutils import nodes
from sphinx import addnodes
from sphinx.util.docutils import SphinxDirective

DOWNLOADS = "_downloads"  # folder of the HTML build that holds each chapter's files
ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # a fixed time stamp: the same results give the same zip
HTML_BUILDERS = ("html", "dirhtml")  # one page per document, so relative links are known


# -- every page's scripts exactly once -------------------------------------------------------

def _dedupe_scripts(app: Any, pagename: str, templatename: str, context: dict,
                    doctree: Any) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        attrs = getattr(script, "attributes", {}) or {}
        key = (getattr(script, "filename", str(script)) or "", attrs.get("body"))  # "" == None
        if key not in seen:
            seen.add(key)
            unique.append(script)
    scripts[:] = unique  # in place: it is the builder's own list


# -- execution status ------------------------------------------------------------------------

@dataclass(frozen=True)
class ChapterStatus:
    """One row of the execution status table: a registered chapter as it was last executed."""

    name: str
    state: str  # "current", "prose changed", "stale" or "not executed"
    why: str  # for a stale chapter, what changed since (else "")
    profile: str = ""
    wall_time_s: float | None = None
    machine: str = ""
    executed_at: str = ""
    input_key: str = ""  # the stored key, in full


def machine_label(machine: dict[str, Any]) -> str:
    """The machine of a provenance record in a few words: its name, the device, and on a CPU the
    capability torch dispatched to (which decides low bits and speed), e.g. "AMD EPYC (cpu,
    AVX2)" or "NVIDIA H200 (cuda, compute 9.0)"."""
    device = str(machine.get("device", "cpu"))
    if device.startswith("cuda"):
        name = machine.get("gpu") or machine.get("device_name", "?")
        cc = machine.get("compute_capability")
        return f"{name} ({device}" + (f", compute {cc})" if cc else ")")
    capability = machine.get("cpu_capability", "?")
    if machine.get("forced"):
        capability += ", forced"
    return f"{machine.get('cpu_model', '?')} ({device}, {capability})"


def chapter_status(root: Path) -> list[ChapterStatus]:
    """Every registered chapter in book order with its provenance and whether it is current
    (`runner.chapter_status`, at the profile it was run at): for one that is not, which files
    changed, the part of the study each belongs to and what republishing costs."""
    from precisionlab.engine import runner

    rows = []
    for name in runner.chapter_names(root):
        found = runner.chapter_status(root, name)
        record = found.record
        if record is None:
            state = "not executed" if found.state == "not executed" else "stale"
            rows.append(ChapterStatus(name, state, found.why()))
            continue
        stored = record.get("input_key") or ""
        why = f"{found.why()}; republishing: {found.cost()}" if found.state != "current" else ""
        state = {"current": "current", "re-render": "prose changed"}.get(found.state, "stale")
        rows.append(ChapterStatus(
            name, state, why, record.get("profile", "cpu"), record.get("wall_time_s"),
            machine_label(record.get("machine", {})), record.get("executed_at", ""), stored))
    return rows


def status_summary(rows: list[ChapterStatus]) -> str:
    """One sentence over the table: how many chapters are current, the wall time in all."""
    counts = {s: sum(r.state == s for r in rows)
              for s in ("current", "prose changed", "stale", "not executed")}
    seconds = sum(r.wall_time_s or 0.0 for r in rows)
    machines = len({r.machine for r in rows if r.machine})
    prose = f"{counts['prose changed']} with new prose to render, " \
        if counts["prose changed"] else ""
    return (f"{len(rows)} chapters: {counts['current']} current, {prose}{counts['stale']} "
            f"stale, {counts['not executed']} not executed. Their last runs took "
            f"{seconds:,.0f} s of wall time in all, on {machines} "
            f"machine{'s' if machines != 1 else ''}.")


def _cell(*content: nodes.Node | str) -> nodes.entry:
    para = nodes.paragraph()
    for item in content:
        para += nodes.Text(item) if isinstance(item, str) else item
    return nodes.entry("", para)


def _breakable(name: str) -> nodes.literal:
    """A chapter name as code that may wrap after each underscore (each piece an inline block,
    styled in book/_static): no character is added, so a copied name stays the name."""
    pieces = [p + "_" for p in name.split("_")[:-1]] + [name.split("_")[-1]]
    return nodes.literal(name, "", *(nodes.inline(p, p, classes=["name-part"]) for p in pieces))


def status_table(rows: list[ChapterStatus], docname: str) -> nodes.table:
    """The docutils table of `rows`; each chapter name a link to its page `book/<name>`."""
    header = ["Chapter", "State", "Profile", "Wall time", "Machine", "Executed (UTC)",
              "Input key"]
    table = nodes.table(classes=["chapter-status"])
    group = nodes.tgroup(cols=len(header))
    table += group
    group.extend(nodes.colspec(colwidth=1) for _ in header)  # widths: book/_static CSS
    head, body = nodes.thead(), nodes.tbody()
    head += nodes.row("", *(_cell(h) for h in header))
    for r in rows:
        link = addnodes.pending_xref("", nodes.literal(r.name, r.name), refdomain="std",
                                     reftype="doc", reftarget=f"/book/{r.name}",
                                     refexplicit=True, refwarn=True, refdoc=docname)
        state = f"{r.state}: {r.why}" if r.why else r.state
        wall = f"{r.wall_time_s:,.0f}\u00a0s" if r.wall_time_s is not None else ""
        short = r.input_key[:10]  # as in the names of reruns, book/_runs/<chapter>__<key>
        key = nodes.literal(short, short) if short else ""
        body += nodes.row("", _cell(link), _cell(state), _cell(r.profile), _cell(wall),
                          _cell(r.machine), _cell(r.executed_at.removesuffix(" UTC")),
                          _cell(key),
                          classes=[f"state-{r.state.replace(' ', '-')}"])
    group += head
    group += body
    return table


class ChapterStatusDirective(SphinxDirective):
    """``chapter-status``: the execution status of every registered chapter, at build time."""

    has_content = False

    def run(self) -> list[nodes.Node]:
        self.env.note_reread()  # re-read at every build: the table is computed
        rows = chapter_status(Path(self.env.srcdir))
        return [nodes.paragraph("", status_summary(rows)), status_table(rows, self.env.docname)]


def _breakable_links(app: Any, doctree: nodes.document, docname: str) -> None:
    """Chapter links of a status table as code that wraps after underscores (resolving a `doc`
    reference replaces the link's content with plain text, so this runs after it)."""
    for table in doctree.findall(nodes.table):
        if "chapter-status" in table["classes"]:
            for ref in list(table.findall(nodes.reference)):
                ref[:] = [_breakable(ref.astext())]


# -- downloads -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Download:
    """One file offered on a chapter page, written to `path` under the HTML build."""

    path: str  # posix, relative to the HTML output folder
    data: bytes
    note: str  # what it is, for the reader


def results_files(root: Path, chapter: str) -> list[Path]:
    """The results a chapter wrote: `data/<chapter>/` (hidden files aside) and its verdicts."""
    folder = root / "data" / chapter
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(folder).parts)) if folder.is_dir() else []
    verdicts = root / "data" / "verdicts" / f"{chapter}.json"
    return files + ([verdicts] if verdicts.is_file() else [])


def deterministic_zip(root: Path, files: list[Path]) -> bytes:
    """A zip of `files` under their paths relative to `root`, sorted, with fixed times and
    modes: the same files always give the same bytes."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(files, key=lambda p: p.relative_to(root).as_posix()):
            info = zipfile.ZipInfo(path.relative_to(root).as_posix(), date_time=ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def chapter_downloads(root: Path, chapter: str) -> list[Download]:
    """A chapter's template, executed notebook and results zip, as far as they exist, placed
    under `_downloads/<chapter>/` with the paths they have in the project."""
    base = f"{DOWNLOADS}/{chapter}"
    found = []
    template = root / "notebooks" / f"{chapter}.ipynb"
    if template.is_file():
        found.append(Download(
            f"{base}/notebooks/{chapter}.ipynb", template.read_bytes(),
            f"the template, to rerun it: put it in `notebooks/` and run "
            f"`precisionlab run {chapter} -p NAME VALUE`"))
    executed = root / "book" / f"{chapter}.ipynb"
    if executed.is_file():
        found.append(Download(f"{base}/book/{chapter}.ipynb", executed.read_bytes(),
                              "this page as executed: outputs and provenance"))
    files = results_files(root, chapter)
    if files:
        found.append(Download(
            f"{base}/{chapter}-data.zip", deterministic_zip(root, files),
            f"the {len(files)} results files it wrote, `data/{chapter}/` and its verdicts, "
            "under their paths in the project"))
    return found


def _inline(text: str) -> list[nodes.Node]:
    """`text` as nodes, its `backquoted` parts as code."""
    return [nodes.literal(part, part) if k % 2 else nodes.Text(part)
            for k, part in enumerate(text.split("`")) if part]


def _size(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{max(1, round(n / 1e3))} kB"


def downloads_box(downloads: list[Download], page_dir: str) -> nodes.Element:
    """The "Downloads" box of a chapter page in `page_dir`, its links relative to that folder
    (so they resolve from file://)."""
    box = nodes.admonition(classes=["downloads", "tip"])
    box += nodes.title("Downloads", "Downloads")
    items = nodes.bullet_list()
    for d in downloads:
        shown = d.path.split("/", 2)[2]  # the project path, e.g. notebooks/01_x.ipynb
        link = nodes.reference(shown, "", nodes.literal(shown, shown),
                               refuri=posixpath.relpath(d.path, page_dir or "."))
        para = nodes.paragraph("", "", link, nodes.Text(f" ({_size(len(d.data))}): "),
                               *_inline(d.note))
        items += nodes.list_item("", para)
    box += items
    return box


def _chapters(app: Any) -> list[str]:
    """The registered chapters (cached per build), or none outside a Precision Lab project."""
    cached = getattr(app, "_precisionlab_chapters", None)
    if cached is None:
        from precisionlab.engine import registry

        root = Path(app.srcdir)
        cached = registry.load(root).names if (root / registry.FILE).is_file() else []
        app._precisionlab_chapters = cached
    return cached


def _downloads(app: Any, chapter: str) -> list[Download]:
    cache = app.__dict__.setdefault("_precisionlab_downloads", {})
    if chapter not in cache:
        cache[chapter] = chapter_downloads(Path(app.srcdir), chapter)
    return cache[chapter]


def _add_downloads_box(app: Any, doctree: nodes.document, docname: str) -> None:
    if app.builder.name not in HTML_BUILDERS or not docname.startswith("book/"):
        return
    chapter = docname.removeprefix("book/")
    if chapter not in _chapters(app):
        return
    section = next(iter(doctree.findall(nodes.section)), None)
    downloads = _downloads(app, chapter)
    if section is None or not downloads:
        return
    page_dir = posixpath.dirname(app.builder.get_target_uri(docname))
    title = section.first_child_matching_class(nodes.title)
    section.insert(0 if title is None else title + 1, downloads_box(downloads, page_dir))


def _write_downloads(app: Any, exception: Exception | None) -> None:
    """Write every chapter's downloads into the HTML build (all of them, every build: a page
    left unchanged by an incremental build still links to them)."""
    if exception is not None or app.builder.name not in HTML_BUILDERS:
        return
    out = Path(app.outdir)
    for chapter in _chapters(app):
        for d in _downloads(app, chapter):
            target = out / d.path
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.is_file() or target.read_bytes() != d.data:
                target.write_bytes(d.data)


def setup(app: Any) -> dict[str, Any]:
    """Sphinx entry point (listed in _config.yml under sphinx.extra_extensions)."""
    # early: Sphinx stops calling html-page-context handlers at the first that returns a value
    app.connect("html-page-context", _dedupe_scripts, priority=100)
    app.add_directive("chapter-status", ChapterStatusDirective)
    app.connect("doctree-resolved", _add_downloads_box)
    app.connect("doctree-resolved", _breakable_links)
    app.connect("build-finished", _write_downloads)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
