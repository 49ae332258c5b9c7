"""Who a request comes from: the owner of the state directory, or a named token.

The owner's token is ``agent.token`` (:mod:`.auth`): full power, as the embedded Executor
has. Named tokens are made by the owner (`conveyor token create NAME --policy FILE`) for
others, each bound to a policy, and kept in ``tokens.json`` in the state directory:

    {"tokens": {"ci": {"sha256": "<hex digest of the token>",
                       "policy": "/srv/ci-policy.yaml",    # null: the node's policy.yaml / defaults
                       "created_at": 1717171717.5}}}

Mode 0600, replaced atomically, re-read when it changes (so a revocation, or an edit by hand,
applies at once to a running agent). Only a hash of each token is kept: the token itself is
shown once, in the answer to its creation. A policy given inline at creation is kept as
``policies/<name>.yaml`` (0600) and the token bound to that file.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import faults
from ..faults import Point
from . import OWNER
from .auth import TokenCheck, bearer_token, write_private
from .errors import ApiError
from .policy import PolicyFile, ReadOnly, Rules, TokenRules, Unrestricted, load_policy, parse_policy

log = logging.getLogger("conveyor.agent")

TOKENS_NAME = "tokens.json"
POLICIES_DIR = "policies"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"


def digest(token: str) -> str:
    """What the file keeps of a token. A plain hash suffices: tokens are 256 random bits."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class NamedToken:
    """One named token as the file keeps it (its hash, never the token)."""

    name: str
    sha256: str
    policy: str | None  # the policy file it is bound to; None: the node's
    created_at: float

    def public(self, last_used_at: float | None) -> dict:
        """What the list answers: everything but the hash."""
        return {"name": self.name, "policy": self.policy, "created_at": self.created_at, "last_used_at": last_used_at}


class TokenFile:
    """``tokens.json`` of one state directory, re-read when it changes. A broken file lets no
    named token in (fail closed) and is not written over; the owner's token still works."""

    def __init__(self, root: Path):
        self.path = root / TOKENS_NAME
        self._lock = threading.Lock()
        self._stamp: object = object()
        self._tokens: dict[str, NamedToken] = {}
        self.error: str | None = None

    def _refresh(self) -> None:  # with the lock held
        try:
            st = self.path.stat()
        except FileNotFoundError:
            self._tokens, self.error, self._stamp = {}, None, None
            return
        stamp = (st.st_mtime_ns, st.st_ino, st.st_size)
        if stamp == self._stamp:
            return
        if st.st_mode & 0o077:  # written by hand: tighten it, as agent.token is
            os.chmod(self.path, 0o600)
        try:
            self._tokens, self.error = _parse(self.path.read_text()), None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            self._tokens, self.error = {}, f"{self.path} is broken ({exc}); no named token is accepted until it is fixed"
            log.warning("%s", self.error)
        self._stamp = stamp

    def all(self) -> dict[str, NamedToken]:
        with self._lock:
            self._refresh()
            return dict(self._tokens)

    def find(self, given: str) -> NamedToken | None:
        wanted, found = digest(given), None
        for record in self.all().values():  # every hash compared, in constant time each
            if hmac.compare_digest(record.sha256, wanted):
                found = record
        return found

    def add(self, record: NamedToken) -> None:
        with self._lock:
            tokens = self._writable()
            if record.name in tokens:
                raise ApiError(409, "token_exists", f"a token named {record.name!r} exists; revoke it first or choose another name", "name")
            self._write({**tokens, record.name: record})

    def remove(self, name: str) -> NamedToken:
        with self._lock:
            tokens = self._writable()
            if name not in tokens:
                raise token_not_found(name)
            record = tokens.pop(name)
            self._write(tokens)
            return record

    def _writable(self) -> dict[str, NamedToken]:
        self._refresh()
        if self.error:
            raise ApiError(409, "tokens_file_broken", f"{self.error}: fix or remove it first")
        return dict(self._tokens)

    def _write(self, tokens: dict[str, NamedToken]) -> None:
        body = {"tokens": {name: {k: v for k, v in asdict(t).items() if k != "name"} for name, t in sorted(tokens.items())}}
        write_private(self.path, json.dumps(body, indent=2) + "\n")
        self._stamp = object()  # re-read on next use: the file is the truth


def _parse(text: str) -> dict[str, NamedToken]:
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("tokens", {}), dict):
        raise ValueError('expected {"tokens": {NAME: {...}}}')
    tokens = {}
    for name, fields in data.get("tokens", {}).items():
        policy = fields.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise ValueError(f"token {name!r}: policy must be a path or null")
        tokens[name] = NamedToken(name, str(fields["sha256"]), policy, float(fields.get("created_at", 0)))
    return tokens


def token_not_found(name: str) -> ApiError:
    return ApiError(404, "token_not_found", f"no token named {name!r}", "name", {"name": name})


@dataclass(frozen=True)
class Caller:
    """Who a request comes from, and the rules its jobs are checked by."""

    name: str  # OWNER, or the named token's name
    rules: Rules
    owner: bool = False


class Callers:
    """Resolves bearer tokens to callers, and creates, lists and revokes named tokens (the
    agent is the one writer of tokens.json: the CLI goes through its API)."""

    def __init__(self, root: Path, node_policy: PolicyFile):
        self.root = root
        self.node_policy = node_policy
        self.owner_token = TokenCheck(root)
        self.tokens = TokenFile(root)
        self._owner = Caller(OWNER, Unrestricted(), owner=True)
        # no token name can be this (NAME_PATTERN): the operator's open read-only view
        self.anonymous = Caller("(no token)", ReadOnly())
        self._policies: dict[str, PolicyFile] = {}  # by file: each re-read when it changes
        self._last_used: dict[str, float] = {}  # kept in memory: a write per request costs too much
        self._admin = threading.Lock()

    def resolve(self, authorization: str | None) -> Caller | None:
        """The caller a request's Authorization header names; None when it names no one."""
        given = bearer_token(authorization)
        if given is None:
            return None
        if self.owner_token.is_owner(given):
            return self._owner
        record = self.tokens.find(given)
        if record is None:
            return None
        self._last_used[record.name] = time.time()
        return Caller(record.name, TokenRules(record.name, self._policy_of(record)))

    def _policy_of(self, record: NamedToken) -> PolicyFile:
        if record.policy is None:
            return self.node_policy
        with self._admin:
            if record.policy not in self._policies:
                self._policies[record.policy] = PolicyFile(self.root, Path(record.policy))
            return self._policies[record.policy]

    # ------------------------------------------------------------------ management (owner only)

    def create(self, name: str, policy_path: str | None = None, policy_text: str | None = None) -> tuple[NamedToken, str]:
        """A new named token bound to a policy file (``policy_path``), to a policy given inline
        (``policy_text``), or to the node's policy (neither); the token is returned only here."""
        if not re.fullmatch(NAME_PATTERN, name):
            raise ApiError(422, "invalid_request", f"token name {name!r}: use 1 to 64 letters, digits, '_', '.' or '-', starting with a letter or digit", "name")
        if name == OWNER:
            raise ApiError(422, "invalid_request", f"{OWNER!r} names the owner of the state directory; choose another name", "name")
        if policy_path is not None and policy_text is not None:
            raise ApiError(422, "invalid_request", "give policy_path or policy, not both", "policy")
        with self._admin:
            if name in self.tokens.all():
                raise ApiError(409, "token_exists", f"a token named {name!r} exists; revoke it first or choose another name", "name")
            policy = self._bind(name, policy_path, policy_text)
            if policy_text is not None:
                faults.reached(Point.TOKEN_POLICY_WRITTEN, name)
            token = secrets.token_urlsafe(32)
            record = NamedToken(name, digest(token), policy, time.time())
            self.tokens.add(record)
        return record, token

    def _bind(self, name: str, policy_path: str | None, policy_text: str | None) -> str | None:
        """The policy file the new token is bound to, checked now: a broken one is refused."""
        if policy_text is not None:
            try:
                parse_policy(policy_text, "the policy given")
            except ValueError as exc:
                raise ApiError(422, "invalid_policy", f"policy refused: {exc}", "policy") from None
            folder = self.root / POLICIES_DIR
            folder.mkdir(mode=0o700, exist_ok=True)
            path = folder / f"{name}.yaml"
            write_private(path, policy_text)
            return str(path)
        if policy_path is None:
            return None
        if not os.path.isabs(policy_path):
            raise ApiError(422, "invalid_policy", f"policy file {policy_path!r}: give an absolute path on the agent's machine", "policy_path")
        path = os.path.abspath(policy_path)
        try:
            load_policy(Path(path))
        except (OSError, ValueError) as exc:
            raise ApiError(422, "invalid_policy", f"policy file refused: {exc}", "policy_path") from None
        return path

    def revoke(self, name: str) -> NamedToken:
        """Forget a named token: the next request that carries it gets 401."""
        with self._admin:
            record = self.tokens.remove(name)
            faults.reached(Point.TOKEN_REVOKED, name)
            self._last_used.pop(name, None)
            kept = self.root / POLICIES_DIR / f"{name}.yaml"
            if record.policy == str(kept):  # its inline policy goes with it
                kept.unlink(missing_ok=True)
                self._policies.pop(record.policy, None)
        return record

    def listing(self) -> list[dict]:
        """Every named token, oldest first, without its hash; last use since this agent started."""
        tokens = sorted(self.tokens.all().values(), key=lambda t: (t.created_at, t.name))
        return [t.public(self._last_used.get(t.name)) for t in tokens]
