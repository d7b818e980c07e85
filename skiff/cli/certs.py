"""`skiff certs check|renew [--pki-dir DIR]`: the cluster's certificates on this machine.

`check` lists every certificate under the PKI directory with its subject and expiry, and warns
about those ending within 30 days (exit status 1 when one has ended). `renew` re-issues every
certificate the CA signed, same identities and names, new keys and dates (the CA itself is
kept); the daemons read their certificates when they start, so restart them afterwards.
The directory defaults to the one holding the CLI config's CA (what `make up` and the lab use).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from skiff import config, errors, pki


def register(sub: Any) -> None:
    p = sub.add_parser("certs", help="check or renew the cluster's certificates (check, renew)")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    for verb, text, fn in (("check", "list every certificate and when it expires", check_main),
                           ("renew", "re-issue every certificate from the CA", renew_main)):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("--pki-dir", default="", help="the PKI directory (default: the CLI config's CA's)")
        v.set_defaults(func=fn)


def pki_dir(args: argparse.Namespace) -> Path:
    if args.pki_dir:
        return Path(args.pki_dir)
    cfg = config.load_config()
    if not cfg.certificate_authority:
        raise errors.InvalidError("no --pki-dir and the CLI config names no certificateAuthority")
    return Path(cfg.certificate_authority).parent


def status_of(info: pki.CertInfo, now: Any) -> str:
    left = info.remaining(now)
    if left.total_seconds() <= 0:
        return "EXPIRED"
    if left < pki.WARN_BEFORE:
        return f"WARNING: {left.days}d left"
    return f"{left.days}d"


def check_main(args: argparse.Namespace) -> int:
    d = pki.PKIDir(pki_dir(args))
    infos = d.certificates()
    if not infos:
        raise errors.InvalidError(f"no certificates under {d.path}")
    now = pki.utcnow()
    print(f"{'CERTIFICATE':<28}{'SUBJECT':<44}{'EXPIRES':<22}RESIDUAL")
    expired = False
    for info in infos:
        subject = info.common_name + (f" ({','.join(info.organizations)})" if info.organizations else "")
        state = status_of(info, now)
        expired = expired or state == "EXPIRED"
        print(f"{info.name:<28}{subject:<44}{info.not_after:%Y-%m-%d %H:%M}Z      {state}")
    return 1 if expired else 0


def renew_main(args: argparse.Namespace) -> int:
    d = pki.PKIDir(pki_dir(args))
    if not d.has_ca_key():
        raise errors.InvalidError(f"{d.ca.key} is missing: renew on a machine holding the CA key")
    renewed = d.renew(now=pki.utcnow())
    for name in renewed:
        print(f"renewed {name}")
    print(f"{len(renewed)} certificate(s) renewed under {d.path}; restart the daemons to use them")
    return 0
