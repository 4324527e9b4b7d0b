"""HumanEval and MBPP problems -> the code task's rows: {id, prompt, solution, test, entry_point}.

prompt + solution + "\n\n" + test is a complete program that raises on a wrong answer (the sandbox runs the
tests apart from the solution, calling its entry point across processes); a model is trained on
prompt -> solution and asked to continue the prompt.

- HumanEval: the prompt (imports, signature, docstring with examples) and canonical solution as they are; the test is
  `check(candidate)` followed by a call on the entry point. Ids he_<n>.
- MBPP: the reference code is parsed (ast); the tested function (the first name the tests call that the code defines)
  gives the signature; the description and the first test become its docstring; imports, helper functions and
  classes of the reference code come before it in the prompt (the tests need them); its body is the solution. The
  tests are test_setup_code + test_list. Ids mbpp_<task_id>. Code that does not parse is reported, not converted."""

import ast
import copy
import re
from dataclasses import dataclass, field

# what running one program against its tests can end in (the sandbox's Outcome.kind; counted per point as exec_<kind>)
OUTCOMES = ("passed", "syntax_error", "assertion", "timeout", "memory", "forbidden", "crash")


@dataclass
class Converted:
    rows: list[dict]
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (source id, why)


def humaneval(records: list[dict]) -> Converted:
    rows = []
    for rec in records:
        number = str(rec["task_id"]).rsplit("/", 1)[-1]
        rows.append({"id": f"he_{number}", "prompt": rec["prompt"], "solution": rec["canonical_solution"],
                     "test": f"{rec['test'].rstrip()}\n\n\ncheck({rec['entry_point']})\n",
                     "entry_point": rec["entry_point"]})
    return Converted(rows)


def _called_names(tests: list[str]) -> list[str]:
    names = []
    for test in tests:
        try:
            tree = ast.parse(test)
        except SyntaxError:
            continue
        names += [n.func.id for n in ast.walk(tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)]
    return names


def _indent(text: str, pad: str = "    ") -> str:
    return "".join(pad + line if line.strip() else line for line in text.splitlines(keepends=True))


def mbpp_row(rec: dict) -> dict:
    """One MBPP record -> a code row; ValueError says why it cannot be converted."""
    code = str(rec["code"]).replace("\r\n", "\n").replace("\r", "\n").expandtabs(4)
    try:
        tree = ast.parse(code)
    except SyntaxError as err:
        raise ValueError(f"reference code does not parse ({err.msg}, line {err.lineno})") from None
    defined = {n.name: n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
    tests = list(rec["test_list"])
    entry = next((name for name in _called_names(tests) if name in defined), None)
    if entry is None:
        raise ValueError(f"the tests call no function the reference code defines (defined: {sorted(defined) or 'none'})")
    target = defined[entry]
    context = "".join(ast.unparse(n) + "\n" for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom)))
    helpers = [ast.unparse(n) for n in tree.body if n is not target and not isinstance(n, (ast.Import, ast.ImportFrom))]
    context += "".join(h + "\n\n" for h in helpers)
    stub = copy.copy(target)
    stub.body = [ast.Pass()]
    signature = ast.unparse(stub).rsplit("\n", 1)[0]
    example = tests[0].strip()
    description = re.sub(r"\s+", " ", str(rec["text"])).strip().replace('"""', "'''").replace("\\", "\\\\")
    docstring = f'    """{description}\n\n    {example.replace(chr(92), chr(92) * 2)}\n    """\n'
    body = "".join(_indent(ast.unparse(stmt)) + "\n" for stmt in target.body)
    setup = str(rec.get("test_setup_code") or "").replace("\r\n", "\n").strip()
    test = (setup + "\n\n" if setup else "") + "\n".join(t.strip() for t in tests) + "\n"
    return {"id": f"mbpp_{rec['task_id']}", "prompt": f"{context}{signature}\n{docstring}", "solution": body,
            "test": test, "entry_point": entry}


def mbpp(records: list[dict]) -> Converted:
    out = Converted([])
    for rec in records:
        try:
            out.rows.append(mbpp_row(rec))
        except ValueError as err:
            out.skipped.append((f"mbpp_{rec.get('task_id')}", str(err)))
    return out


CONVERTERS = {"humaneval": humaneval, "mbpp": mbpp}


def program(row: dict, completion: str) -> dict:
    """What the sandbox runs (tasks.backends.sandbox.Program): the prompt with the model's (or the reference)
    completion as the untrusted solution; the tests, with the prompt as their trusted context, as the judge."""
    return {"solution": f"{row['prompt']}{completion}\n", "tests": row.get("test", ""), "context": row["prompt"],
            "entry_point": row.get("entry_point", "")}


def id_number(row_id: str) -> int:
    return int(re.sub(r"\D", "", row_id) or -1)


def select(rows: list[dict], ids: tuple[int, int] | None = None, max_solution_lines: int | None = None) -> list[dict]:
    """The filters of `curate convert`: an inclusive range of source numbers, and solutions of at most N lines."""
    if ids:
        rows = [r for r in rows if ids[0] <= id_number(r["id"]) <= ids[1]]
    if max_solution_lines:
        rows = [r for r in rows if len([ln for ln in r["solution"].splitlines() if ln.strip()]) <= max_solution_lines]
    return rows
