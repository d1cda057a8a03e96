"""The shipped IAM policy allows exactly the AWS IoT operations the code calls.

The code is read at test time: a new ``aws.call(iot, "...")`` without a matching policy
change fails here, and so does a permission nothing uses any more.
"""

from __future__ import annotations

import ast
import json
from functools import cache
from pathlib import Path

import boto3
import yaml

ROOT = Path(__file__).resolve().parent.parent
POLICY = ROOT / "deploy" / "iam-policy.json"
TEMPLATE = ROOT / "deploy" / "cross-account-role.yaml"

# The functions every AWS call goes through, and which argument names the operation.
DISPATCHERS = {"call": 1, "pages": 1, "aws_call": 3, "act_in_aws": 3}


@cache
def _api_names(service: str) -> dict[str, str]:
    return boto3.client(service, region_name="us-east-1").meta.method_to_api_mapping


def _dispatcher(node: ast.Call, in_aws_module: bool) -> str | None:
    func = node.func
    if (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id == "aws"
        and func.attr in {"call", "pages"}
    ):
        return func.attr
    if isinstance(func, ast.Name) and (
        func.id in {"aws_call", "act_in_aws"} or (in_aws_module and func.id in {"call", "pages"})
    ):
        return func.id
    return None


def _operation_arg(node: ast.Call, position: int) -> ast.expr | None:
    if len(node.args) > position:
        return node.args[position]
    return next((k.value for k in node.keywords if k.arg == "operation"), None)


def called_methods() -> dict[str, set[str]]:
    """boto3 method name -> where it is called, for every AWS call in transfers/."""
    found: dict[str, set[str]] = {}
    iot_methods = set(_api_names("iot"))
    files = sorted({*ROOT.glob("transfers/*.py"), *ROOT.glob("transfers/**/*.py")})
    for path in files:
        relative = path.relative_to(ROOT).as_posix()
        # demo/ (outside transfers/) seeds the stand-in: never a managed account.
        if "/migrations/" in relative:
            continue
        tree = ast.parse(path.read_text(), relative)
        for function in [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)] + [tree]:
            for node in ast.walk(function):
                if not isinstance(node, ast.Call):
                    continue
                kind = _dispatcher(node, relative == "transfers/aws.py")
                if kind is None:
                    continue
                arg = _operation_arg(node, DISPATCHERS[kind])
                where = f"{relative}:{node.lineno}"
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.setdefault(arg.value, set()).add(where)
                    continue
                if function is tree:
                    continue  # seen from inside its function
                params = {a.arg for a in function.args.args}
                if function.name in DISPATCHERS and getattr(arg, "id", None) in params:
                    continue  # the dispatcher passing its own argument on
                # An operation chosen at run time (restore's list of steps): every IoT
                # method name written in that function (else in its module) counts.
                names = {
                    n.value
                    for n in ast.walk(function)
                    if isinstance(n, ast.Constant) and n.value in iot_methods
                } or {  # the steps are listed by a helper of the same module (restore.steps)
                    n.value
                    for n in ast.walk(tree)
                    if isinstance(n, ast.Constant) and n.value in iot_methods
                }
                assert names, f"{where}: cannot tell which AWS operation this calls"
                for name in names:
                    found.setdefault(name, set()).add(where)
    return found


def policy_actions(document: dict) -> set[str]:
    actions: set[str] = set()
    for statement in document["Statement"]:
        assert statement["Effect"] == "Allow"
        listed = statement["Action"]
        actions.update([listed] if isinstance(listed, str) else listed)
    return actions


def test_the_code_calls_aws_through_the_boundary():
    called = called_methods()
    # Sanity: the scan sees the calls every part of the product makes.
    for method in ("transfer_certificate", "list_certificates", "attach_policy"):
        assert method in called


def test_the_policy_allows_exactly_the_iot_operations_the_code_calls():
    iot, quotas, sts = _api_names("iot"), _api_names("service-quotas"), _api_names("sts")
    needed, unknown = {}, []
    for method, where in called_methods().items():
        if method in iot:
            needed[f"iot:{iot[method]}"] = sorted(where)
        elif method in quotas:  # each IoT API's allowance, read-only
            needed[f"servicequotas:{quotas[method]}"] = sorted(where)
        elif method not in sts:  # STS is the portal's own identity, not the managed role
            unknown.append(f"{method} ({', '.join(sorted(where))})")
    assert not unknown, f"not an IoT, Service Quotas or STS operation: {unknown}"

    allowed = policy_actions(json.loads(POLICY.read_text()))
    assert not [a for a in allowed if "*" in a], "no wildcards: least privilege"
    missing = sorted(set(needed) - allowed)
    unused = sorted(allowed - set(needed))
    assert not missing, "deploy/iam-policy.json does not allow: " + ", ".join(
        f"{a} (called at {', '.join(needed[a])})" for a in missing
    )
    assert not unused, f"deploy/iam-policy.json allows what the code never calls: {unused}"


def test_the_cloudformation_role_carries_the_same_policy_and_an_external_id():
    template = yaml.safe_load(TEMPLATE.read_text())
    role = template["Resources"]["TransferPortalRole"]["Properties"]
    [inline] = role["Policies"]
    assert policy_actions(inline["PolicyDocument"]) == policy_actions(
        json.loads(POLICY.read_text())
    )
    [trust] = role["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Action"] == "sts:AssumeRole"
    assert trust["Condition"]["StringEquals"]["sts:ExternalId"] == {"Ref": "ExternalId"}
