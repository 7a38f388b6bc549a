"""containers/Dockerfile and containers/cosmogan.def agree with each other and with setup.cfg.

Docker and Apptainer do not run here, so these are static checks of the recipe text: the
files they copy exist, they install the packages setup.cfg names (without torch, plus
mpi4py and Horovod) with the same bounds, they pin the same base image and versions, and
the versions satisfy setup.cfg. The recipes themselves re-check at build time what only
a build can see (the base image's torch, the MPICH linked by mpi4py and Horovod).
"""

from __future__ import annotations

import configparser
import fnmatch
import re
import shlex
from dataclasses import dataclass, field

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

DOCKERFILE = REPO / "containers" / "Dockerfile"
APPTAINER_DEF = REPO / "containers" / "cosmogan.def"
BUILD_HOROVOD = REPO / "containers" / "build_horovod.sh"
DOCKERIGNORE = REPO / ".dockerignore"

# The version variables both recipes define (Dockerfile ARGs, .def %post assignments).
VERSION_VARS = ("NGC_TORCH_VERSION", "MPICH_VERSION", "MPI4PY_VERSION", "HOROVOD_VERSION", "COSMOGAN_DEPS")
FORBIDDEN = {"torch", "mpich"}  # the image's torch stays; the system MPICH is the MPI


# --- parsing -------------------------------------------------------------------------------

@dataclass
class Recipe:
    """What a container recipe says, whatever its syntax."""
    base: str
    variables: dict[str, str]          # ARGs / %post assignments
    copied: list[str]                  # sources taken from the build context
    env: dict[str, str]                # runtime environment
    commands: list[str] = field(default_factory=list)  # shell command lines of the build


def split_shell(script: str) -> list[str]:
    """Simple commands of a shell script: split at unquoted &&, ||, ;, | and newlines."""
    out, cur, quote, i = [], [], None, 0
    while i < len(script):
        c = script[i]
        if quote:
            if c == quote:
                quote = None
            elif c == "\\" and quote == '"' and i + 1 < len(script):
                cur.append(c)
                i += 1
                c = script[i]
        elif c in "'\"":
            quote = c
        elif c == "\\" and i + 1 < len(script):
            cur.append(c)
            i += 1
            c = script[i]
        elif c in ";|\n" or script.startswith("&&", i):
            out.append("".join(cur))
            cur = []
            i += 2 if script.startswith(("&&", "||"), i) else 1
            continue
        cur.append(c)
        i += 1
    out.append("".join(cur))
    return [s.strip() for s in out if s.strip()]


def expand(text: str, variables: dict[str, str]) -> str:
    return re.sub(r"\$\{(\w+)\}|\$(\w+)",
                  lambda m: variables.get(m.group(1) or m.group(2), m.group(0)), text)


def parse_dockerfile(text: str) -> Recipe:
    # Docker drops whole-line comments first, then joins continuation lines.
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    base, variables, copied, env, commands = "", {}, [], {}, []
    for line in joined.splitlines():
        if not line.strip():
            continue
        instr, _, rest = line.strip().partition(" ")
        instr = instr.upper()
        if instr == "FROM":
            base = rest.split()[0]
        elif instr == "ARG":
            name, _, value = shlex.split(rest)[0].partition("=")
            variables[name] = value
        elif instr in ("COPY", "ADD"):
            args = shlex.split(rest)
            if not any(a.startswith("--from") for a in args):
                copied += [a for a in args[:-1] if not a.startswith("--")]
        elif instr == "ENV":
            for tok in shlex.split(rest):
                k, _, v = tok.partition("=")
                env[k] = v
        elif instr == "RUN":
            commands += split_shell(rest)
    return Recipe(base, variables, copied, env, commands)


def parse_apptainer(text: str) -> Recipe:
    header, sections, current = {}, {}, None
    for line in text.splitlines():
        m = re.match(r"^%(\w+)", line)
        if m:
            current = m.group(1)
            sections[current] = []
        elif current is None:
            if ":" in line and not line.lstrip().startswith("#"):
                k, _, v = line.partition(":")
                header[k.strip().lower()] = v.strip()
        else:
            sections[current].append(line)

    def body(name):  # comments dropped, continuation lines joined
        lines = [ln for ln in sections.get(name, []) if not ln.lstrip().startswith("#")]
        return re.sub(r"\\\n", " ", "\n".join(lines))

    assert header.get("bootstrap") == "docker", "cosmogan.def must bootstrap from a docker image"
    variables = {}
    post = body("post")
    for line in post.splitlines():
        toks = shlex.split(line) if line.strip() else []
        if len(toks) == 1 and re.fullmatch(r"[A-Z][A-Z0-9_]*=.*", toks[0]):
            name, _, value = toks[0].partition("=")
            variables[name] = value
    copied = [shlex.split(ln)[0] for ln in body("files").splitlines() if ln.strip()]
    env = {}
    for line in body("environment").splitlines():
        toks = shlex.split(line) if line.strip() else []
        if toks[:1] == ["export"]:
            for tok in toks[1:]:
                k, _, v = tok.partition("=")
                env[k] = v
    recipe = Recipe(header.get("from", ""), variables, copied, env, split_shell(post))
    recipe.labels = dict(ln.split(None, 1) for ln in body("labels").splitlines() if ln.strip())
    return recipe


@dataclass
class PipInstall:
    env: dict[str, str]      # VAR=value prefixes of the command
    options: list[str]       # everything starting with "-" (with its value, for -c/-r)
    targets: list[str]       # requirements and paths


def pip_installs(recipe: Recipe) -> list[PipInstall]:
    found = []
    for cmd in recipe.commands:
        toks = shlex.split(expand(cmd, recipe.variables))
        if "pip" not in toks or "install" not in toks[toks.index("pip"):]:
            continue
        env = dict(t.partition("=")[::2] for t in toks[:toks.index("pip")] if re.fullmatch(r"\w+=.*", t))
        rest = toks[toks.index("install", toks.index("pip")) + 1:]
        options, targets, i = [], [], 0
        while i < len(rest):
            if rest[i] in ("-c", "--constraint", "-r", "--requirement"):
                options.append(f"{rest[i]} {rest[i + 1]}")
                i += 2
                continue
            (options if rest[i].startswith("-") else targets).append(rest[i])
            i += 1
        found.append(PipInstall(env, options, targets))
    return found


def requirements(recipe: Recipe) -> dict[str, SpecifierSet]:
    """Every package a recipe asks pip for by name (paths, i.e. the package itself, excluded)."""
    out = {}
    for inst in pip_installs(recipe):
        for t in inst.targets:
            if t.startswith(("/", ".")):
                assert "[" not in t, f"{t}: extras of the package pull in what they name (mpich, pytest)"
                continue
            req = Requirement(t)
            out[canonicalize_name(req.name)] = req.specifier
            assert not req.extras, f"{t}: extras pull in what setup.cfg's extras name (mpich, pytest)"
    return out


def setup_cfg() -> tuple[dict[str, SpecifierSet], dict[str, list[SpecifierSet]]]:
    """install_requires, and every requirement named by an extra (name -> its specifiers)."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")

    def reqs(block):
        return [Requirement(ln.strip()) for ln in block.splitlines() if ln.strip() and not ln.strip().startswith("#")]

    install = {canonicalize_name(r.name): r.specifier for r in reqs(cfg["options"]["install_requires"])}
    extras: dict[str, list[SpecifierSet]] = {}
    for block in cfg["options.extras_require"].values():
        for r in reqs(block):
            extras.setdefault(canonicalize_name(r.name), []).append(r.specifier)
    return install, extras


@pytest.fixture(scope="module")
def docker() -> Recipe:
    return parse_dockerfile(DOCKERFILE.read_text())


@pytest.fixture(scope="module")
def apptainer() -> Recipe:
    return parse_apptainer(APPTAINER_DEF.read_text())


@pytest.fixture(params=["Dockerfile", "cosmogan.def"])
def recipe(request, docker, apptainer) -> Recipe:
    return docker if request.param == "Dockerfile" else apptainer


# --- the parser itself ---------------------------------------------------------------------

def test_parser_reads_a_known_recipe():
    """The checks below are only as good as the parsing: try it on a recipe with known content."""
    r = parse_dockerfile(
        "FROM img:1\n# a comment\nARG V=1.2\nARG D=\"a>=1 b>=2\"\nCOPY --chown=x x.sh y/ /dst/\n"
        "COPY --from=builder /a /b\nENV A=1 B=two\n"
        "RUN MPICC=cc python -m pip install --no-deps \"m==${V}\" \\\n"
        "    && python -c \"import a; b = 'x && y'\" && pip install -c /c.txt ${D} /src\n")
    assert (r.base, r.variables, r.copied, r.env) == ("img:1", {"V": "1.2", "D": "a>=1 b>=2"},
                                                      ["x.sh", "y/"], {"A": "1", "B": "two"})
    installs = pip_installs(r)
    assert [(i.env, i.options, i.targets) for i in installs] == [
        ({"MPICC": "cc"}, ["--no-deps"], ["m==1.2"]),
        ({}, ["-c /c.txt"], ["a>=1", "b>=2", "/src"])]
    assert len(r.commands) == 3  # the && inside the python string does not split


# --- the files exist -----------------------------------------------------------------------

def test_copied_files_exist(recipe):
    assert recipe.copied, "no COPY / %files found"
    for src in recipe.copied:
        assert (REPO / src).exists(), f"{src} is copied into the image but is not in the repository"


def test_dockerignore_keeps_the_sources_and_drops_the_bulk(docker):
    """`COPY . /opt/cosmogan` must carry the package but not .venv, data/ or runs/."""
    patterns = [ln.strip() for ln in DOCKERIGNORE.read_text().splitlines()
                if ln.strip() and not ln.startswith("#")]

    def ignored(path):
        return any(fnmatch.fnmatch(path, p.lstrip("/")) or fnmatch.fnmatch(path.split("/")[0], p.lstrip("/"))
                   for p in patterns if not p.startswith("!"))

    assert "." in docker.copied
    for needed in ("pipeline", "setup.cfg", "pyproject.toml", "README.md", "configs", "slurm",
                   "containers/build_horovod.sh"):
        assert not ignored(needed), f".dockerignore drops {needed}, which the image needs"
    for bulk in (".venv", "data", "runs", ".git"):
        assert ignored(bulk), f".dockerignore should keep {bulk} out of the build context"


def test_apptainer_files_suffice_to_install_the_package(apptainer):
    """%files copies named paths (no ignore file): they must include all pip needs to build."""
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    needed = {"pyproject.toml", "setup.cfg", "pipeline"}
    readme = re.match(r"file:\s*(\S+)", cfg["metadata"].get("long_description", ""))
    if readme:
        needed.add(readme.group(1))
    assert needed <= set(apptainer.copied), f"missing from %files: {needed - set(apptainer.copied)}"


# --- the two recipes agree -----------------------------------------------------------------

def test_same_pinned_base_image(docker, apptainer):
    assert docker.base == apptainer.base
    repo, _, tag = docker.base.rpartition(":")
    assert repo == "nvcr.io/nvidia/pytorch", docker.base
    assert re.fullmatch(r"\d\d\.\d\d-py3", tag), f"pin an NGC release tag, not {tag!r}"


def test_same_versions(docker, apptainer):
    for var in VERSION_VARS:
        assert var in docker.variables, f"Dockerfile has no ARG {var}"
        assert docker.variables[var] == apptainer.variables.get(var), f"{var} differs between the recipes"
    for key, value in apptainer.labels.items():  # %labels repeat the versions for `apptainer inspect`
        var = {"cosmogan.torch.version": "NGC_TORCH_VERSION", "cosmogan.mpich.version": "MPICH_VERSION",
               "cosmogan.mpi4py.version": "MPI4PY_VERSION", "cosmogan.horovod.version": "HOROVOD_VERSION"}.get(key)
        if var:
            assert value == docker.variables[var], f"%labels {key}={value} but {var}={docker.variables[var]}"
        elif key == "org.opencontainers.image.base.name":
            assert value == docker.base


def test_same_pip_installs(docker, apptainer):
    assert requirements(docker) == requirements(apptainer)


# --- versions agree with setup.cfg and the Horovod script ----------------------------------

def test_installed_packages_are_setup_cfgs(recipe):
    """install_requires minus torch, plus mpi4py (and extras setup.cfg names), same bounds."""
    install, extras = setup_cfg()
    got = requirements(recipe)
    assert not FORBIDDEN & set(got), f"the image must not pip-install {FORBIDDEN & set(got)}"
    missing = set(install) - {"torch"} - set(got)
    assert not missing, f"setup.cfg requires {missing} but the recipe does not install it"
    assert "mpi4py" in got, "mpi4py must be built in the recipe"
    for name, spec in got.items():
        if name == "mpi4py":
            continue
        assert name in install or name in extras, f"{name} is installed but setup.cfg does not name it"
        want = install.get(name) or extras[name][0]
        assert spec == want, f"{name}{spec} in the recipe, {name}{want} in setup.cfg"
    assert "torch" in install, "setup.cfg lost its torch bound; the check of the image's torch needs it"


def test_mpi4py_pin_satisfies_setup_cfg(recipe):
    _, extras = setup_cfg()
    pinned = recipe.variables["MPI4PY_VERSION"]
    assert requirements(recipe)["mpi4py"] == SpecifierSet(f"=={pinned}")
    for spec in extras.get("mpi4py", []):
        assert spec.contains(Version(pinned)), f"mpi4py {pinned} does not satisfy setup.cfg's mpi4py{spec}"


def test_base_image_torch_satisfies_setup_cfg(docker):
    """NGC ships a pre-release torch (2.6.0a0+...); pip accepts an installed pre-release for a
    `>=` bound, and so does this check (a bare SpecifierSet.contains would not)."""
    install, _ = setup_cfg()
    torch = docker.variables["NGC_TORCH_VERSION"]
    assert install["torch"].contains(Version(torch), prereleases=True), \
        f"the base image's torch {torch} does not satisfy setup.cfg's torch{install['torch']}"
    # ... and the recipe makes the build fail if the base image carries another torch.
    assert any("torch.__version__" in c and ".startswith('${NGC_TORCH_VERSION}')" in c for c in docker.commands)


def test_horovod_version_matches_build_script(recipe):
    if not BUILD_HOROVOD.exists():
        pytest.skip("containers/build_horovod.sh is not in the tree yet; nothing to compare with")
    m = re.search(r"^HVD_VERSION=['\"]?([^'\"\s]+)", BUILD_HOROVOD.read_text(), re.MULTILINE)
    assert m, "containers/build_horovod.sh no longer sets HVD_VERSION=..."
    assert recipe.variables["HOROVOD_VERSION"] == m.group(1), \
        f"recipe pins horovod {recipe.variables['HOROVOD_VERSION']}, build_horovod.sh builds {m.group(1)}"
    _, extras = setup_cfg()
    for spec in extras.get("horovod", []):
        assert spec.contains(Version(m.group(1)))


# --- how things are built ------------------------------------------------------------------

def mpich_prefix(recipe: Recipe) -> str:
    configure = [c for c in recipe.commands if c.startswith("./configure")]
    assert len(configure) == 1, "expected one ./configure (MPICH's)"
    opts = shlex.split(configure[0])
    for opt in ("--enable-shared",):
        assert opt in opts, f"MPICH must be configured with {opt}"
    assert any(o in ("--with-device=ch4:ofi", "--with-device=ch3") or o.startswith("--with-device=ch3:")
               for o in opts), "MPICH device: ch4:ofi or ch3 (NERSC's Shifter recipe)"
    assert "--disable-shared" not in opts
    prefix = [o.split("=", 1)[1] for o in opts if o.startswith("--prefix=")]
    assert prefix, "MPICH needs an explicit --prefix"
    return prefix[0]


def test_mpich_from_source_shared_and_first_on_path(recipe):
    prefix = mpich_prefix(recipe)
    assert any("mpich.org/static/downloads/${MPICH_VERSION}/mpich-${MPICH_VERSION}.tar.gz" in c
               for c in recipe.commands), "MPICH must be downloaded at MPICH_VERSION"
    assert any(c.split()[:1] == ["ldconfig"] for c in recipe.commands), "run ldconfig after installing MPICH"
    assert recipe.env.get("PATH", "").startswith(f"{prefix}/bin:"), \
        "MPICH's bin must come first on PATH (NGC images also carry Open MPI's mpirun)"


def test_mpi4py_and_horovod_built_against_that_mpich(recipe):
    prefix = mpich_prefix(recipe)
    mpi4py = [i for i in pip_installs(recipe) if any(t.startswith("mpi4py") for t in i.targets)]
    assert len(mpi4py) == 1
    inst = mpi4py[0]
    assert any(o in ("--no-binary=mpi4py", "--no-binary=:all:") for o in inst.options), \
        "mpi4py must be built from source, not taken as a wheel"
    assert inst.env.get("MPICC") == f"{prefix}/bin/mpicc"
    assert inst.env.get("MPI4PY_BUILD_MPIABI") == "1", \
        "without MPI4PY_BUILD_MPIABI=1 mpi4py needs MPI-4 symbols Cray MPICH 8.1 lacks"
    horovod = [c for c in recipe.commands if "build_horovod.sh" in c]
    assert horovod, "Horovod must be built by containers/build_horovod.sh"
    toks = shlex.split(horovod[0])
    assert f"MPICXX={prefix}/bin/mpicxx" in toks and "HOROVOD_GPU_OPERATIONS=NCCL" in toks


def test_package_installed_without_touching_torch(recipe):
    installs = pip_installs(recipe)
    package = [i for i in installs if any(t.startswith("/") for t in i.targets)]
    assert package and all("--no-deps" in i.options for i in package), \
        "install the package itself with --no-deps (its torch requirement must not reach pip)"
    deps = [i for i in installs if not any(t.startswith(("/", "mpi4py")) for t in i.targets)]
    assert deps and all(any(o.startswith(("-c ", "--constraint ")) for o in i.options) for i in deps), \
        "install the dependencies under a constraints file pinning the image's torch"
    assert any("torch==" in c and ">" in c for c in recipe.commands), \
        "the constraints file must be written from the installed torch"


def test_hdf5_file_locking_off(recipe):
    assert recipe.env.get("HDF5_USE_FILE_LOCKING") == "FALSE"
