"""A data-driven runner for the store's state machine, after etcd-io/raft's testdata scripts.

A script is a sequence of blocks: a command (one line, or several for `txn`), a line `----`,
then the expected output, then a blank line. Running a script applies each command to one
KVState and compares the produced text with the expected text. Set SKIFF_REWRITE=1 to rewrite
the expected outputs from what the code does now (then review the diff).

Commands:
  put KEY VALUE [lease=ID] [prev] [ignore_value] [ignore_lease]
  get KEY [end=END|prefix|from] [rev=N] [limit=N] [keys_only] [count_only]
      [sort=asc|desc:key|version|create|mod|value] [minmod=N] [maxmod=N] [mincreate=N] [maxcreate=N]
  del KEY [end=END|prefix|from] [prev]
  txn            (following lines like etcdctl's interactive txn: compares, `success:`, ops,
                  `failure:`, ops; compares: value(k) = "v", mod(k) > 3, version/create/lease)
  compact REV
  grant ID TTL | revoke ID | expire ID... | keepalive ID | leases
  alarm activate|deactivate MEMBER nospace|corrupt|none | alarms   (replicated alarms)
  size           (the bytes the space quota counts: live data and history)
  watch FROM [KEY [end=END|prefix|from]]   (history events, as a watcher from FROM sees them)
  state          (every key, the revision and the compact revision)
  roundtrip      (snapshot, restore, and check the copy reads the same)
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

from controlplane.store import mvcc
from controlplane.store.errors import EtcdError


def prefix_end(key: bytes) -> bytes:
    b = bytearray(key)
    for i in range(len(b) - 1, -1, -1):
        if b[i] < 0xFF:
            b[i] += 1
            return bytes(b[: i + 1])
    return b"\x00"


def _kv(kv: mvcc.KeyValue | None) -> str:
    if kv is None:
        return "<none>"
    s = f"{kv.key.decode()}={kv.value.decode()} c={kv.create_revision} m={kv.mod_revision} v={kv.version}"
    if kv.lease:
        s += f" lease={kv.lease}"
    return s


def _event(ev: mvcc.Event) -> str:
    if ev.type == mvcc.PUT:
        s = f"PUT {_kv(ev.kv)}"
    else:
        s = f"DELETE {ev.kv.key.decode()} m={ev.kv.mod_revision}"
    if ev.prev_kv is not None:
        s += f" (prev {_kv(ev.prev_kv)})"
    return s


def _opts(args: list[str]) -> tuple[list[str], dict[str, str]]:
    pos, kw = [], {}
    for a in args:
        if "=" in a:
            k, v = a.split("=", 1)
            kw[k] = v
        elif a in ("prev", "ignore_value", "ignore_lease", "keys_only", "count_only", "prefix", "from"):
            kw[a] = "1"
        else:
            pos.append(a)
    return pos, kw


def _end(key: bytes, kw: dict[str, str]) -> bytes:
    if "prefix" in kw:
        return prefix_end(key)
    if "from" in kw:
        return mvcc.ALL_KEYS
    return kw.get("end", "").encode()


_SORT_TARGETS = {"key": 0, "version": 1, "create": 2, "mod": 3, "value": 4}


def parse_op(line: str) -> Any:
    words = shlex.split(line)
    cmd, (pos, kw) = words[0], _opts(words[1:])
    if cmd == "put":
        return mvcc.PutReq(
            pos[0].encode(), pos[1].encode() if len(pos) > 1 else b"", int(kw.get("lease", 0)),
            "prev" in kw, "ignore_value" in kw, "ignore_lease" in kw,
        )
    if cmd == "del":
        key = pos[0].encode()
        return mvcc.DeleteReq(key, _end(key, kw), "prev" in kw)
    if cmd == "get":
        key = pos[0].encode()
        order, target = mvcc.SORT_NONE, mvcc.TARGET_KEY
        if "sort" in kw:
            o, t = kw["sort"].split(":")
            order = mvcc.SORT_ASCEND if o == "asc" else mvcc.SORT_DESCEND
            target = _SORT_TARGETS[t]
        return mvcc.RangeReq(
            key, _end(key, kw), int(kw.get("limit", 0)), int(kw.get("rev", 0)), order, target,
            "keys_only" in kw, "count_only" in kw, int(kw.get("minmod", 0)), int(kw.get("maxmod", 0)),
            int(kw.get("mincreate", 0)), int(kw.get("maxcreate", 0)),
        )
    raise ValueError(f"unknown op {line!r}")


_CMP_TARGETS = {"version": 0, "create": 1, "mod": 2, "value": 3, "lease": 4}
_CMP_RESULTS = {"=": 0, ">": 1, "<": 2, "!=": 3}


def parse_compare(line: str) -> mvcc.Compare:
    words = shlex.split(line)
    target, key = words[0].rstrip(")").split("(")
    t = _CMP_TARGETS[target]
    value: Any = words[2].encode() if t == mvcc.CMPT_VALUE else int(words[2])
    return mvcc.Compare(_CMP_RESULTS[words[1]], t, key.encode(), value)


def parse_txn(lines: list[str]) -> mvcc.TxnReq:
    compares, success, failure = [], [], []
    part = compares
    for ln in lines:
        if ln == "success:":
            part = success
        elif ln == "failure:":
            part = failure
        elif part is compares:
            compares.append(parse_compare(ln))
        else:
            part.append(parse_op(ln))
    return mvcc.TxnReq(tuple(compares), tuple(success), tuple(failure))


def _result(res: Any) -> list[str]:
    if isinstance(res, mvcc.RangeResult):
        return [f"count={res.count} more={res.more}".lower(), *(_kv(kv) for kv in res.kvs)]
    if isinstance(res, mvcc.PutResult):
        return [f"prev: {_kv(res.prev_kv)}"] if res.prev_kv else []
    if isinstance(res, mvcc.DeleteResult):
        return [f"deleted={res.deleted}", *(f"prev: {_kv(kv)}" for kv in res.prev_kvs)]
    if isinstance(res, mvcc.TxnResult):
        out = [f"succeeded={str(res.succeeded).lower()}"]
        for r in res.responses:
            out += ["  " + line for line in (_result(r) or ["ok"])]
        return out
    if isinstance(res, mvcc.LeaseGrantResult):
        return [f"lease {res.id} ttl={res.ttl}"]
    if res is None:
        return []
    return [str(res)]


_ALARMS = {"none": mvcc.ALARM_NONE, "nospace": mvcc.ALARM_NOSPACE, "corrupt": mvcc.ALARM_CORRUPT}
_ALARM_NAMES = {v: k.upper() for k, v in _ALARMS.items()}


class Runner:
    def __init__(self) -> None:
        self.st = mvcc.KVState()

    def run(self, lines: list[str]) -> str:
        head = lines[0]
        words = shlex.split(head)
        cmd = words[0]
        out: list[str] = []
        try:
            if cmd in ("put", "del"):
                op = parse_op(head)
                applied = self.st.apply([mvcc.cmd_put(op) if cmd == "put" else mvcc.cmd_delete(op)])
                out += self._applied(applied)
            elif cmd == "get":
                out += _result(self.st.range(parse_op(head)))
            elif cmd == "txn":
                req = parse_txn(lines[1:])
                mvcc.check_txn(req)
                out += self._applied(self.st.apply([mvcc.cmd_txn(req)]))
            elif cmd == "compact":
                out += self._applied(self.st.apply([mvcc.cmd_compact(int(words[1]))]))
            elif cmd == "grant":
                out += self._applied(self.st.apply([mvcc.cmd_lease_grant(int(words[1]), int(words[2]))]))
            elif cmd == "revoke":
                out += self._applied(self.st.apply([mvcc.cmd_lease_revoke(int(words[1]))]))
            elif cmd == "expire":
                out += self._applied(self.st.apply([mvcc.cmd_lease_expire(int(w) for w in words[1:])]))
            elif cmd == "keepalive":
                out += self._applied(self.st.apply([mvcc.cmd_lease_keepalive(int(words[1]))]))
            elif cmd == "alarm":
                action = {"activate": mvcc.ALARM_ACTIVATE, "deactivate": mvcc.ALARM_DEACTIVATE}[words[1]]
                applied = self.st.apply([mvcc.cmd_alarm(action, int(words[2]), _ALARMS[words[3]])])
                res, _ = applied.results[0]
                if isinstance(res, EtcdError):
                    out.append(f"error: {res.message}")
                else:
                    out += [f"changed member={m} {_ALARM_NAMES[a]}" for m, a in res]
                out.append(f"rev={self.st.revision}")
            elif cmd == "alarms":
                out += [f"member={m} {_ALARM_NAMES[a]}" for m, a in self.st.alarm_list()]
            elif cmd == "size":
                out.append(f"live={self.st.live_bytes} history={self.st.history_bytes} total={self.st.size_bytes}")
            elif cmd == "leases":
                for le in sorted(self.st.leases()):
                    out.append(f"lease {le.id} ttl={le.ttl} keys={[k.decode() for k in le.keys]}")
            elif cmd == "watch":
                pos, kw = _opts(words[1:])
                evs = self.st.events_since(int(pos[0]))
                if len(pos) > 1:
                    key = pos[1].encode()
                    end = _end(key, kw)
                    evs = [e for e in evs if mvcc.in_range(e.kv.key, key, end)]
                out += [_event(e) for e in evs]
            elif cmd == "state":
                out.append(f"rev={self.st.revision} compact={self.st.compact_revision} history={self.st.history_len()}")
                out += [_kv(kv) for kv in self.st.range(mvcc.RangeReq(b"\x00", mvcc.ALL_KEYS)).kvs]
            elif cmd == "roundtrip":
                copy = mvcc.KVState.from_snapshot(self.st.snapshot())
                everything = mvcc.RangeReq(b"\x00", mvcc.ALL_KEYS)
                same = (
                    copy.range(everything) == self.st.range(everything)
                    and copy.revision == self.st.revision
                    and copy.events_since(self.st.compact_revision) == self.st.events_since(self.st.compact_revision)
                    and sorted(copy.leases()) == sorted(self.st.leases())
                    and copy.alarm_list() == self.st.alarm_list()
                    and copy.size_bytes == self.st.size_bytes
                )
                out.append("same" if same else "DIFFERENT")
            else:
                raise ValueError(f"unknown command {cmd!r}")
        except EtcdError as e:
            out.append(f"error: {e.message}")
        return "\n".join(out)

    def _applied(self, applied: mvcc.Applied) -> list[str]:
        out: list[str] = []
        for r, _rev in applied.results:
            if isinstance(r, EtcdError):
                out.append(f"error: {r.message}")
            else:
                out += _result(r)
        out.append(f"rev={self.st.revision}")
        out += [_event(e) for e in applied.events]
        if applied.refreshed:
            out.append(f"refreshed={applied.refreshed}")
        if applied.revoked:
            out.append(f"revoked={applied.revoked}")
        return out


def run_script(path: Path) -> tuple[str, str]:
    """(expected, actual) for the whole file; rewrites it when SKIFF_REWRITE=1."""
    text = path.read_text()
    blocks: list[tuple[list[str], str]] = []
    lines = text.split("\n")
    i = 0
    preamble: list[str] = []
    while i < len(lines):
        if not lines[i].strip() or lines[i].startswith("#"):
            preamble.append(lines[i])
            i += 1
            continue
        cmd = []
        while lines[i] != "----":
            cmd.append(lines[i])
            i += 1
        i += 1
        exp = []
        while i < len(lines) and lines[i] != "":
            exp.append(lines[i])
            i += 1
        blocks.append((preamble + cmd, "\n".join(exp)))
        preamble = []
    runner = Runner()
    expected, actual, rewritten = [], [], []
    for block, exp in blocks:
        cmd = [ln for ln in block if ln.strip() and not ln.startswith("#")]
        got = runner.run(cmd)
        expected.append("\n".join(cmd) + "\n----\n" + exp)
        actual.append("\n".join(cmd) + "\n----\n" + got)
        kept = [ln for ln in block if ln.strip()]
        rewritten.append("\n".join(kept) + "\n----\n" + got)
    if os.environ.get("SKIFF_REWRITE") == "1":
        path.write_text("\n\n".join(rewritten) + "\n")
    return "\n\n".join(expected), "\n\n".join(actual)
