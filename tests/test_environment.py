"""The conda environment, the book's configuration and the Makefile agree with the project.

* environment.yml, the one lock, pins every requirement of pyproject.toml (the method's and
  each extra's) and `make setup` installs exactly those pins;
* _config.yml and _toc.yml parse, name files that exist, and keep the book offline;
* the final notebook chapters land in the intended parts of the table of contents.
"""

import re
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml
from sphinx.util.matching import patmatch

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ["01_channel_similarity", "02_grouped_switching", "03_weight_combination",
            "04_qualitative", "05_faithfulness", "06_discriminability", "07_ablations",
            "08_summary"]


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()  # PEP 503


def _pins(requirements: list[str], where: str) -> dict[str, str]:
    pins: dict[str, str] = {}
    for requirement in requirements:
        match = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;]+)\s*", requirement)
        assert match, f"{where}: {requirement!r} is not pinned with =="
        name = _normalise(match.group(1))
        assert name not in pins, f"{where}: {name} is pinned twice"
        pins[name] = match.group(2)
    return pins


#: Pinned in the lock though pyproject.toml does not name them: torchvision brings them.
TRANSITIVE = {"numpy", "pillow"}


def _name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    assert match, requirement
    return _normalise(match.group(1))


def pyproject_requirements() -> dict[str, list[str]]:
    """Requirement names by section: ``core`` and each extra (fdcam's own extras left out)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    sections = {"core": project["dependencies"], **project["optional-dependencies"]}
    return {section: [_name(r) for r in requirements if _name(r) != "fdcam"]
            for section, requirements in sections.items()}


def environment() -> dict:
    return yaml.safe_load((ROOT / "environment.yml").read_text())


def environment_pins() -> dict[str, str]:
    pip_sections = [d["pip"] for d in environment()["dependencies"] if isinstance(d, dict)]
    assert len(pip_sections) == 1, "environment.yml: expected one pip section"
    requirements = [r for r in pip_sections[0] if not r.startswith("-")]  # `-e .[dev]`
    return _pins(requirements, "environment.yml")


def makefile_constraints() -> dict[str, str]:
    """The constraints `make setup` writes from environment.yml (its sed expression)."""
    import subprocess

    line = next(line for line in (ROOT / "Makefile").read_text().splitlines()
                if line.strip().startswith("sed -n") and "environment.yml" in line)
    command = line.strip().split(" > ")[0].replace("$$", "$")
    done = subprocess.run(command, shell=True, cwd=ROOT, capture_output=True, text=True,
                          check=True)
    return _pins(done.stdout.split(), "make setup's constraints")


def test_the_method_needs_torch_and_torchvision_only():
    assert sorted(pyproject_requirements()["core"]) == ["torch", "torchvision"]
    assert set(pyproject_requirements()) == {"core", "baselines", "evaluation", "onnxruntime",
                                             "book", "dev"}


def test_environment_pins_every_pyproject_requirement():
    named = {name for names in pyproject_requirements().values() for name in names}
    pins = environment_pins()
    assert sorted(named - set(pins)) == [], "named in pyproject.toml, not pinned"
    assert sorted(set(pins) - named - TRANSITIVE) == [], "pinned, named nowhere"


def test_make_setup_installs_the_environment_pins():
    assert makefile_constraints() == environment_pins()


def test_environment_python_satisfies_requires_python():
    conda = [d for d in environment()["dependencies"] if isinstance(d, str)]
    python = [d for d in conda if d.startswith("python")]
    assert len(python) == 1
    version = tuple(int(p) for p in re.split(r"[=<>]+", python[0])[1].split(".")[:2])
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    minimum = tuple(int(p) for p in requires.removeprefix(">=").split(".")[:2])
    assert version >= minimum
    assert "-e .[dev]" in next(d["pip"] for d in environment()["dependencies"]
                               if isinstance(d, dict))


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


@pytest.fixture(scope="module")
def toc() -> dict:
    return yaml.safe_load((ROOT / "_toc.yml").read_text())


def test_config_renders_papermill_outputs_as_they_are(config):
    assert config["execute"]["execute_notebooks"] == "off"


def test_figure_numbers_in_the_book_are_only_the_papers(config):
    # Sphinx's automatic "Fig. N" on our own figures would clash with the paper's Figs. 1-6;
    # sphinx-jupyterbook-latex turns numfig back on, so it stays off too.
    assert config["sphinx"]["config"]["numfig"] is False
    assert config["latex"]["use_jupyterbook_latex"] is False


def test_config_files_exist(config):
    for bib in config["bibtex_bibfiles"]:
        assert (ROOT / bib).is_file(), bib
    assert not config.get("logo") or (ROOT / config["logo"]).is_file()


def test_config_keeps_the_book_offline(config):
    sphinx = config["sphinx"]["config"]
    path = sphinx["mathjax_path"]
    assert "://" not in path, "MathJax must be served locally"
    assert not path.startswith("//"), "MathJax must be served locally"
    # Where `make mathjax` writes it: tests/scripts/test_reproduce.py keeps the Makefile's
    # MATHJAX equal to this path inside the first static path.
    assert path.endswith("tex-chtml.js"), "MathJax 3's CommonHTML component"
    assert "mathjax2_config" not in sphinx, "MathJax 3 is served; its CSS is the theme's"
    # Launch buttons are links to Binder and Colab; nothing runs in the page (no Thebe).
    assert config["launch_buttons"]["thebe"] is False
    for key in ("binderhub_url", "colab_url"):
        url = config["launch_buttons"][key]
        assert not url or url.startswith("https://"), key
    analytics = config["html"]["analytics"]
    assert not analytics["google_analytics_id"]
    assert not analytics["plausible_analytics_domain"]


def test_mathjax_3_is_pinned_and_checked():
    makefile = (ROOT / "Makefile").read_text()
    version = re.search(r"^MATHJAX_VERSION := (3\.\d+\.\d+)$", makefile, re.M)
    digest = re.search(r"^MATHJAX_SHA256 := ([0-9a-f]{64})$", makefile, re.M)
    assert version and digest
    assert "sha256sum --check" in makefile
    built = ROOT / "_build" / "mathjax" / "mathjax"
    if built.is_dir():  # after `make mathjax`: the script and its CommonHTML fonts
        assert (built / "tex-chtml.js").is_file()
        assert any((built / "output" / "chtml" / "fonts" / "woff-v2").glob("*.woff"))


def test_repository_url_is_configured_in_one_place(config):
    # The buttons derive from _config.yml's repository.url; CITATION.cff names the same.
    url = config["repository"]["url"]
    assert re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url)
    assert config["html"]["use_repository_button"] and config["html"]["use_issues_button"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["repository-code"] == url
    # The README links the published book: GitHub Pages of that repository.
    owner, name = url.removeprefix("https://github.com/").split("/")
    assert f"<https://{owner.lower()}.github.io/{name}/>" in (ROOT / "README.md").read_text()
    assert citation["license"] == "MIT"
    assert "MIT License" in (ROOT / "LICENSE").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT"  # a SPDX expression (PEP 639)
    assert "2206.08792" in (ROOT / "book" / "references.bib").read_text()


def test_source_notebooks_hide_their_plumbing():
    # The book hides checks, imports and nbval-only text by cell tags; nbval reads its own
    # tag (`nbval-check-output`) instead of a comment the reader would see.
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(source, as_version=4)
        for cell in notebook.cells:
            tags = cell.metadata.get("tags", [])
            assert "NBVAL_CHECK_OUTPUT" not in cell.source, source.name
            if cell.cell_type == "code" and "check_parameters(" in cell.source:
                assert "remove-cell" in tags, f"{source.name}: check_parameters is shown"
        checked = [c for c in notebook.cells if "nbval-check-output" in
                   c.metadata.get("tags", [])]
        assert checked, f"{source.name}: no cell is checked by nbval"


def _toc_entries(node):
    """Yield ("file" | "glob", value) for every entry of a jb-book toc."""
    if isinstance(node, dict):
        for key in ("file", "glob"):
            if key in node:
                yield key, node[key]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []):
                yield from _toc_entries(child)


def test_toc_parses_with_sphinx_external_toc():
    parsing = pytest.importorskip("sphinx_external_toc.parsing")
    site_map = parsing.parse_toc_yaml(ROOT / "_toc.yml")
    assert site_map.root.docname == "book/intro"


def test_toc_files_exist(toc):
    assert toc["format"] == "jb-book"
    files = [toc["root"]] + [v for k, v in _toc_entries(toc) if k == "file"]
    for name in files:
        matches = [p for p in (ROOT / f"{name}{s}" for s in (".md", ".ipynb")) if p.is_file()]
        assert matches, f"_toc.yml names {name}, which does not exist"


def _matches(docname: str, pattern: str) -> bool:
    return patmatch(docname, pattern) is not None  # how sphinx-external-toc expands globs


def _globs_by_part(toc) -> dict[str, list[str]]:
    """Per part, its globs and its files (a file is a glob that matches itself)."""
    return {part["caption"]: [v for k, v in _toc_entries(part) if k in ("glob", "file")]
            for part in toc["parts"]}


def test_toc_globs_place_every_chapter_once(toc):
    parts = _globs_by_part(toc)
    expected = {"The method": CHAPTERS[:3], "Experiments": CHAPTERS[3:]}
    for chapter in CHAPTERS:
        homes = [caption for caption, globs in parts.items()
                 if any(_matches(f"book/{chapter}", g) for g in globs)]
        assert len(homes) == 1, f"{chapter} matches the globs of {homes}"
        assert chapter in expected[homes[0]], f"{chapter} would land in {homes[0]}"


def test_toc_globs_match_the_executed_notebooks(toc):
    globs = [g for gs in _globs_by_part(toc).values() for g in gs]
    for notebook in sorted((ROOT / "book").glob("*.ipynb")):
        docname = f"book/{notebook.stem}"
        assert any(_matches(docname, g) for g in globs), f"{docname} is in no toc glob"


def test_every_source_notebook_has_a_profile_parameter():
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(source, as_version=4)
        tagged = [c for c in notebook.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{source.name}: one cell tagged `parameters`"
        assert re.search(r"^profile\s*=\s*\"offline\"", tagged[0].source, re.M), source.name
        outputs = [c for c in notebook.cells if c.cell_type == "code" and c.outputs]
        assert outputs == [], f"{source.name}: source notebooks are committed without outputs"


def test_python_kernel_is_this_interpreter():
    # papermill's `-k python3` and nbval's `--nbval-current-env` must run this venv.
    kernelspec = pytest.importorskip("jupyter_client.kernelspec")
    spec = kernelspec.KernelSpecManager().get_kernel_spec("python3")
    executable = spec.argv[0]
    assert executable in {"python", "python3", sys.executable} or Path(executable).resolve() == \
        Path(sys.executable).resolve()


def test_the_core_job_runs_on_the_lowest_declared_and_the_pinned_torch():
    """The workflow `package` tests the method on pyproject.toml's lower bounds of torch and
    torchvision and on environment.yml's pins: the declared range is the tested range."""
    workflow = yaml.safe_load((ROOT / ".github" / "workflows" / "package.yml").read_text())
    matrix = {row["name"]: row for row in workflow["jobs"]["core"]["strategy"]["matrix"]["include"]}
    core = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    lowest = dict(re.fullmatch(r"([\w-]+)>=([\d.]+)", r).groups() for r in core)
    pins = environment_pins()
    for name in ("torch", "torchvision"):
        assert matrix["lowest"][name] == lowest[name]
        assert matrix["newest"][name] == pins[name]


def test_profile_tables_name_the_main_layer_of_imagenet_sample():
    """A chapter's profile table is prose, typed once: when the imagenet-sample profile's main
    layer changes (`settings.SAMPLE_LAYER`), every row that describes it must change too."""
    from fdcam.paper import settings

    rows = []
    for source in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        notebook = nbformat.read(source, as_version=4)
        for cell in notebook.cells:
            if cell.cell_type != "markdown":
                continue
            rows += [(source.name, line) for line in cell.source.splitlines()
                     if line.startswith("| `imagenet-sample` |") and "EfficientNet-Lite0" in line]
    assert len(rows) >= 3, "the chapters' profile tables moved; update this test"
    stale = [name for name, line in rows if f"`{settings.SAMPLE_LAYER}`" not in line]
    assert stale == [], f"profile tables that do not name {settings.SAMPLE_LAYER}: {stale}"
