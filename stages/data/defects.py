"""Defects injected into correct code to make the rejected side of a DPO pair.

Each defect rewrites the AST of a passing solution in one place; curate keeps a rejected
solution only after running it and seeing it fail its tests.
"""

from __future__ import annotations

import ast
import copy
import random

FLIP = {ast.Lt: ast.GtE, ast.GtE: ast.Lt, ast.Gt: ast.LtE, ast.LtE: ast.Gt,
        ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In}


def flipped_comparison(tree: ast.Module) -> bool:
    """`a < b` -> `a >= b` on the first comparison."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and type(node.ops[0]) in FLIP:
            node.ops[0] = FLIP[type(node.ops[0])]()
            return True
    return False


def off_by_one(tree: ast.Module) -> bool:
    """The first integer constant (a bound, an index, a start value) plus one."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and type(node.value) is int:
            node.value += 1
            return True
    return False


def dropped_exception_handling(tree: ast.Module) -> bool:
    """`try: body except ...: handler` -> `body`: the error now escapes."""
    for parent in ast.walk(tree):
        for field in ("body", "orelse", "finalbody"):
            block = getattr(parent, field, None)
            if not isinstance(block, list):
                continue
            for i, stmt in enumerate(block):
                if isinstance(stmt, ast.Try) and stmt.handlers:
                    block[i:i + 1] = stmt.body
                    return True
    return False


OPERATOR = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Add, ast.FloorDiv: ast.Mod,
            ast.Mod: ast.FloorDiv, ast.Div: ast.Mult, ast.And: ast.Or, ast.Or: ast.And}


def wrong_operator(tree: ast.Module) -> bool:
    """`a + b` -> `a - b` (and * -> +, // <-> %, and <-> or) on the first such operator."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.BinOp, ast.BoolOp)) and type(node.op) in OPERATOR:
            node.op = OPERATOR[type(node.op)]()
            return True
        if isinstance(node, ast.AugAssign) and type(node.op) in OPERATOR:
            node.op = OPERATOR[type(node.op)]()
            return True
    return False


def removed_input_check(tree: ast.Module) -> bool:
    """Drop the first guard at the top of a function: `if <check>: return/raise ...`."""
    for fn in ast.walk(tree):
        if not isinstance(fn, ast.FunctionDef):
            continue
        for i, stmt in enumerate(fn.body):
            if (isinstance(stmt, ast.If) and not stmt.orelse and len(fn.body) > 1
                    and isinstance(stmt.body[-1], (ast.Return, ast.Raise))):
                del fn.body[i]
                return True
    return False


def hard_coded_value(tree: ast.Module, expected: ast.expr | None) -> bool:
    """Every `return` of the function returns the value the first test expects."""
    if expected is None:
        return False
    changed = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Return):
            node.value = copy.deepcopy(expected)
            changed = True
    return changed


def first_expected_value(tests: list[str]) -> ast.expr | None:
    """V in the first `assert f(...) == V` whose V is a literal."""
    for test in tests:
        try:
            node = ast.parse(test).body[0]
        except (SyntaxError, IndexError):
            continue
        if (isinstance(node, ast.Assert) and isinstance(node.test, ast.Compare)
                and isinstance(node.test.ops[0], ast.Eq)):
            value = node.test.comparators[0]
            try:
                ast.literal_eval(value)
            except ValueError:
                continue
            return value
    return None


DEFECTS = ("flipped_comparison", "off_by_one", "dropped_exception_handling", "hard_coded_value",
           "wrong_operator", "removed_input_check")


def candidates(solution: str, tests: list[str], rng: random.Random) -> list[tuple[str, str]]:
    """(defect name, defective source) for every defect that applies, in a seeded order.
    The caller runs them and keeps the first that fails its tests."""
    expected = first_expected_value(tests)
    out = []
    for name in rng.sample(DEFECTS, len(DEFECTS)):
        tree = ast.parse(solution)
        if name == "flipped_comparison":
            changed = flipped_comparison(tree)
        elif name == "off_by_one":
            changed = off_by_one(tree)
        elif name == "dropped_exception_handling":
            changed = dropped_exception_handling(tree)
        elif name == "wrong_operator":
            changed = wrong_operator(tree)
        elif name == "removed_input_check":
            changed = removed_input_check(tree)
        else:
            changed = hard_coded_value(tree, expected)
        if changed:
            source = ast.unparse(ast.fix_missing_locations(tree))
            if source != ast.unparse(ast.parse(solution)):
                out.append((name, source))
    return out


def renamed_identifiers(solution: str) -> str | None:
    """The same function with its parameters and local variables renamed consistently
    (`n` -> `n_1`): an equivalent rewrite, to be run and kept only if it still passes.
    None when there is nothing to rename."""
    tree = ast.parse(solution)
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef)), None)
    if fn is None:
        return None
    names = {a.arg for a in fn.args.args + fn.args.kwonlyargs}
    names |= {n.id for n in ast.walk(fn) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    if not names:
        return None
    mapping = {n: f"{n}_1" for n in sorted(names)}
    for node in ast.walk(fn):
        if isinstance(node, ast.arg) and node.arg in mapping:
            node.arg = mapping[node.arg]
        elif isinstance(node, ast.Name) and node.id in mapping:
            node.id = mapping[node.id]
    return ast.unparse(tree)
