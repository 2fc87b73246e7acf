"""Every command, gin file and link in README.md, docs/*.md and results/README.md exists.

Read from the text alone (no TensorFlow, nothing run): each command in a code block, or in an
inline code span that starts like a command, is checked for
- the tool (`python tools/X.py`) or module (`python -m package.module`) it runs;
- each `--flag` it passes: an argparse option literal in that tool or module or in the project
  files it imports (transitively), or, for `switch_mesh_transformer` / `python -m switch_cli`,
  an absl flag of t5's command line, mesh-tf's utils or switch_cli;
- the test files a `pytest` command names.
Every gin file named by its path under gin/ (`models/...`, `mesh/...`, `recipes/...`,
`repro/...`, `gin/...`) exists, and every relative link (and its #anchor) resolves.
"""

import ast
import functools
import importlib.util
import pathlib
import re
import shlex

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "results" / "README.md"]
GIN_DIRS = ("models", "mesh", "recipes", "repro")
CLI_PROGRAMS = ("switch_mesh_transformer",)
CLI_MODULES = ("switch_cli",)

FENCE = re.compile(r"^```.*?$(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`([^`\n]+(?:\n[^`\n]+)*)`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
GIN_PATH = re.compile(r"(?<![\w/.~$-])((?:gin/)?(?:%s)/[\w./-]+?\.gin)\b" % "|".join(GIN_DIRS))
FLAG = re.compile(r"^\[?--([A-Za-z][\w-]*)")


# -- reading the pages -------------------------------------------------------------------------

def code_blocks(text: str) -> list:
  """Fenced blocks, and blocks indented by 4 spaces after a blank line (outside fences)."""
  blocks = [m.group(1) for m in FENCE.finditer(text)]
  outside = FENCE.sub("", text)
  for m in re.finditer(r"(?:^|\n\n)((?:    \S.*\n?)+)", outside):
    blocks.append("\n".join(line[4:] for line in m.group(1).splitlines()))
  return blocks


def inline_spans(text: str) -> list:
  return [m.group(1).replace("\n", " ") for m in INLINE.finditer(FENCE.sub("", text))]


def command_lines(block: str) -> list:
  """A block's lines with backslash continuations joined and each `&&` part on its own."""
  joined = re.sub(r"\\\n\s*", " ", block)
  return [part.strip() for line in joined.splitlines() for part in line.split("&&")]


def tokens_of(line: str) -> list:
  try:
    tokens = shlex.split(line, comments=True)
  except ValueError:  # an unbalanced quote: not a command
    return []
  while tokens and (re.match(r"^[A-Z_]+=", tokens[0]) or tokens[0] in ("/usr/bin/time", "-v")):
    tokens = tokens[1:]
  return tokens


def is_python(token: str) -> bool:
  return re.fullmatch(r"(\S*/)?python(3(\.\d+)?)?", token) is not None


def is_command(tokens: list) -> bool:
  if not tokens:
    return False
  first = tokens[0]
  return (is_python(first) and len(tokens) > 1) or first in CLI_PROGRAMS or bool(
      re.fullmatch(r"tools/\w+\.py", first))


def page_commands(page: pathlib.Path) -> list:
  text = page.read_text(encoding="utf-8")
  commands = []
  for block in code_blocks(text):
    commands += [t for t in map(tokens_of, command_lines(block)) if is_command(t)]
  for span in inline_spans(text):
    tokens = tokens_of(span)
    if is_command(tokens):
      commands.append(tokens)
  return commands


def all_commands() -> list:
  return [(page, tokens) for page in PAGES for tokens in page_commands(page)]


def flags_of(tokens: list) -> list:
  return sorted({m.group(1) for t in tokens for m in [FLAG.match(t)] if m})


# -- reading the code --------------------------------------------------------------------------

def module_file(module: str):
  """The project file of a dotted module name (a module or a package's __init__), or None."""
  base = REPO.joinpath(*module.split("."))
  for path in (base.with_suffix(".py"), base / "__init__.py"):
    if path.is_file():
      return path
  return None


def project_imports(path: pathlib.Path) -> set:
  """Project files that `path` imports: packages and modules at the root (a command in tools/
  imports its code from switch_experiments)."""
  tree = ast.parse(path.read_text(encoding="utf-8"))
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      modules = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      modules = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
    else:
      continue
    found.update(filter(None, map(module_file, modules)))
  return found


@functools.lru_cache(maxsize=None)
def defined_flags(entry: pathlib.Path) -> frozenset:
  """argparse option names defined in `entry` and the project files it imports, transitively."""
  seen, todo, names = set(), [entry], set()
  while todo:
    path = todo.pop()
    if path in seen:
      continue
    seen.add(path)
    text = path.read_text(encoding="utf-8")
    names.update(re.findall(r"""["']--([A-Za-z][\w-]*)["']""", text))
    names.update(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", text))  # absl flags
    if 'f"--{field.name}"' in text:  # options generated from a dataclass's fields
      names.update(re.findall(r"^\s+(\w+)\s*:\s*\w", text, re.MULTILINE))
    todo.extend(project_imports(path) - seen)
  return frozenset(names)


def _package_file(package: str, relative: str) -> pathlib.Path:
  spec = importlib.util.find_spec(package)  # a top-level name: found, not imported
  return pathlib.Path(spec.submodule_search_locations[0]) / relative


@functools.lru_cache(maxsize=None)
def cli_flags() -> frozenset:
  """absl flags of switch_mesh_transformer: t5's command line, mesh-tf's utils, switch_cli."""
  files = [_package_file("t5", "models/mesh_transformer_main.py"),
           _package_file("mesh_tensorflow", "transformer/utils.py"),
           *sorted((REPO / "switch_cli").glob("*.py"))]
  names = set()
  for path in files:
    names.update(re.findall(r"DEFINE_\w+\(\s*[\"'](\w+)[\"']", path.read_text(encoding="utf-8")))
  return frozenset(names)


def check_command(tokens: list) -> list:
  """Problems with one command, as messages (empty when it is fine)."""
  first, rest = tokens[0], tokens[1:]
  if first in CLI_PROGRAMS:
    return [f"--{f} is not a flag of {first}" for f in flags_of(rest) if f not in cli_flags()]
  if not is_python(first):
    rest = tokens  # tools/X.py ... written without the interpreter
  if rest[0] == "-m":
    module, args = rest[1], rest[2:]
    if module in ("venv", "pip"):
      return []
    if module == "pytest":
      return [f"pytest names {a}, which does not exist" for a in args
              if a.startswith("tests/") and not (REPO / a.split("::")[0]).exists()]
    if module in CLI_MODULES:
      if module_file(module) is None:
        return [f"python -m {module}: no such module"]
      return [f"--{f} is not a flag of {module}" for f in flags_of(args) if f not in cli_flags()]
    path = module_file(module)
    main = REPO.joinpath(*module.split(".")) / "__main__.py"
    if main.is_file():
      path = main
    if path is None:
      return [f"python -m {module}: no such module in the repository"]
    return [f"--{f} is not an option of {module}" for f in flags_of(args)
            if f not in defined_flags(path)]
  script, args = rest[0], rest[1:]
  if not script.startswith("tools/"):
    return []
  path = REPO / script
  if not path.is_file():
    return [f"{script} does not exist"]
  return [f"--{f} is not an option of {script}" for f in flags_of(args)
          if f not in defined_flags(path)]


def gin_problems(page: pathlib.Path) -> list:
  text = page.read_text(encoding="utf-8")
  problems = []
  for name in sorted(set(GIN_PATH.findall(text))):
    relative = name if name.startswith("gin/") else f"gin/{name}"
    if not (REPO / relative).is_file():
      problems.append(f"{name}: no such gin file ({relative})")
  return problems


def slug(heading: str) -> str:
  """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
  # Underscores are word characters to GitHub: `finetune_glue.py` -> finetune_gluepy.
  text = re.sub(r"[`*]|\[|\]\([^)]*\)", "", heading.strip().lower())
  text = re.sub(r"[^\w\- ]", "", text)
  return text.replace(" ", "-")


def anchors(page: pathlib.Path) -> set:
  text = FENCE.sub("", page.read_text(encoding="utf-8"))
  return {slug(m.group(1)) for m in re.finditer(r"^#+\s+(.*)$", text, re.MULTILINE)}


def link_problems(page: pathlib.Path) -> list:
  text = FENCE.sub("", page.read_text(encoding="utf-8"))
  problems = []
  for target in LINK.findall(text):
    if re.match(r"^[a-z]+:", target):  # http:, https:, mailto:
      continue
    path_part, _, anchor = target.partition("#")
    path = (page.parent / path_part).resolve() if path_part else page
    if not path.exists():
      problems.append(f"link {target}: {path_part} does not exist")
    elif anchor and path.suffix == ".md" and anchor not in anchors(path):
      problems.append(f"link {target}: no heading #{anchor} in {path.name}")
  return problems


# -- the tests ---------------------------------------------------------------------------------

@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_command_names_a_tool_and_flags_that_exist(page):
  commands = page_commands(page)
  problems = [f"{shlex.join(t)}\n    {p}" for t in commands for p in check_command(t)]
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_gin_file_named_exists(page):
  problems = gin_problems(page)
  assert not problems, "\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
  problems = link_problems(page)
  assert not problems, "\n".join(problems)


def test_the_pages_hold_commands_to_check():
  commands = all_commands()
  programs = {t[1] if t[0] != "switch_mesh_transformer" and len(t) > 1 else t[0]
              for _, t in commands}
  assert "tools/switch_vs_dense.py" in programs and "switch_mesh_transformer" in programs
  assert len(commands) > 30, len(commands)


def test_a_broken_command_gin_file_and_link_are_caught(tmp_path):
  assert check_command(["python", "tools/switch_vs_dense.py", "--seed", "2"]) == []
  assert check_command(["python", "tools/switch_vs_dense.py", "--sed", "2"]) == [
      "--sed is not an option of tools/switch_vs_dense.py"]
  assert check_command(["python", "tools/no_such_tool.py"]) == [
      "tools/no_such_tool.py does not exist"]
  assert check_command(["switch_mesh_transformer", "--model_dir=/tmp/x", "--gin_fle=a.gin"]) == [
      "--gin_fle is not a flag of switch_mesh_transformer"]
  assert check_command(["python", "-m", "mtf_switch.no_such_module"]) != []
  page = tmp_path / "page.md"
  page.write_text("# Title\n\nSee [here](missing.md), [a part](#title), [gone](#nowhere).\n"
                  "Train with `--gin_file=models/no_such_model.gin`.\n")
  assert link_problems(page) == ["link missing.md: missing.md does not exist",
                                 "link #nowhere: no heading #nowhere in page.md"]
  assert gin_problems(page) == [
      "models/no_such_model.gin: no such gin file (gin/models/no_such_model.gin)"]
