"""The web page's HTML: plain server-rendered markup, every value escaped, no scripts but one poller.

Each function returns one page (or a fragment) as text. The only script
polls an entry's status every two seconds while a job runs, so progress and
the last result appear without reloading; everything else is links and
forms, usable without JavaScript.
"""

from __future__ import annotations

from html import escape
from typing import Iterable
from urllib.parse import quote

STYLE = """body{font:15px/1.4 system-ui,sans-serif;margin:1.5em auto;max-width:72em;padding:0 1em;color:#222}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .6em;border-bottom:1px solid #ddd}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}pre{background:#f6f6f6;padding:.6em}
form.inline{display:inline}nav a{margin-right:.8em}section{margin:1.2em 0}"""

POLL = """<script>
(function(){var box=document.getElementById('status');if(!box)return;
function poll(){fetch(box.dataset.url,{cache:'no-store'}).then(function(r){return r.text()}).then(function(t){
box.textContent=t;setTimeout(poll,2000)}).catch(function(){setTimeout(poll,5000)})}setTimeout(poll,2000)})();
</script>"""


def e(value: object) -> str:
    return escape("" if value is None else str(value), quote=True)


def url(*parts: str, trailing: bool = False) -> str:
    path = "/".join(quote(p, safe="") for p in parts)
    return "/web/" + path + ("/" if trailing and path else "")


def page(title: str, body: str, crumbs: Iterable[tuple[str, str]] = ()) -> bytes:
    nav = " / ".join(['<a href="/web/">logbook</a>'] + [f'<a href="{e(href)}">{e(text)}</a>' for text, href in crumbs])
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(title)} · vmlfs</title>"
            f"<meta name=viewport content='width=device-width'><style>{STYLE}</style></head>"
            f"<body><nav>{nav}</nav><h1>{e(title)}</h1>{body}{POLL}</body></html>").encode()


def size(n: int | None) -> str:
    if n is None:
        return ""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return ""


def table(head: list[str], rows: Iterable[list[str]], numeric: frozenset[int] = frozenset()) -> str:
    th = "".join(f"<th>{e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td class=n>{c}</td>" if i in numeric else f"<td>{c}</td>"
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def form(action: str, token: str, button: str, fields: str = "", name: str = "") -> str:
    return (f'<form class=inline method=post action="{e(action)}"{f" name={e(name)}" if name else ""}>'
            f'<input type=hidden name=csrf value="{e(token)}">{fields}<button type=submit>{e(button)}</button></form>')


def status_box(text: str, poll_url: str) -> str:
    return f'<section><h2>Status</h2><pre id=status data-url="{e(poll_url)}">{e(text)}</pre></section>'


def entries_page(rows: list[tuple[str, str | None, str | None, int]], token: str, status: str) -> bytes:
    body = table(["entry", "release", "domain", "backups"],
                 ([f'<a href="{e(url("e", name, trailing=True))}">{e(name)}</a>', e(release or ""), e(domain or ""), str(n)]
                  for name, release, domain, n in rows), numeric=frozenset({3}))
    body += status_box(status, "/web/status")
    return page("Entries", body)


def entry_page(entry: str, release: str | None, domain: str | None, backups: list[dict], token: str, status: str,
               shown_from: int, total: int, per_page: int) -> bytes:
    kinds = "".join(f"<option>{k}</option>" for k in ("default", "full", "incremental", "differential"))
    actions = form(url("e", entry, "backup"), token, "Take a backup", f"<select name=kind>{kinds}</select> ", name="backup")
    if domain:
        actions += " " + form(url("e", entry, "vm-snapshot"), token, "Take a VM snapshot", name="vm-snapshot")
    rows = []
    for b in backups:
        link = f'<a href="{e(url("e", entry, b["timestamp"], trailing=True))}">{e(b["timestamp"])}</a>'
        provision = form(url("provision"), token, "Provision",
                         f'<input type=hidden name=target value="{e(entry)}@{e(b["timestamp"])}">') if domain else ""
        rows.append([link, e(b["kind"]), size(b["bytes"]), e(f'{b["duration"]:.1f} s' if b["duration"] is not None else ""),
                     e(b["release"] or ""), e(b["vm_snapshot"] or ""), provision])
    pager = ""
    if total > per_page:
        links = [f'<a href="?from={start}">{start + 1}–{min(start + per_page, total)}</a>'
                 if start != shown_from else f"<b>{start + 1}–{min(start + per_page, total)}</b>"
                 for start in range(0, total, per_page)]
        pager = f"<p>newest first, {total} backups: {' '.join(links)}</p>"
    body = (f"<p>release {e(release or 'unknown')}; domain {e(domain or 'none')}</p><section>{actions}</section>"
            + status_box(status, url("e", entry, "status")) + f"<section><h2>Backups</h2>{pager}"
            + table(["timestamp", "kind", "size", "duration", "release", "VM snapshot", ""], rows,
                    numeric=frozenset({2, 3})) + "</section>")
    return page(entry, body, [(entry, url("e", entry, trailing=True))])


def backup_page(entry: str, ts: str, info: dict, files: list[str]) -> bytes:
    counts, sizes = info.get("counts", {}), info.get("sizes", {})
    changes = (f"{counts.get('packed_files', 0)} files packed (new or changed), {counts.get('unchanged_files', 0)} "
               f"unchanged, {counts.get('deduplicated_files', 0)} deduplicated") if counts else "not recorded"
    tree = f"/entries/{entry}/{ts}/home"
    extra = "".join(f'<li><a href="{e(url("file") + quote(f"/entries/{entry}/{ts}/{name}"))}">{e(name)}</a></li>'
                    for name in files)
    body = (f"<ul><li>kind {e(info.get('kind'))}, base {e(info.get('base') or 'none')}, release "
            f"{e(info.get('release') or 'unknown')}, VM snapshot {e(info.get('vm_snapshot') or 'none')}</li>"
            f"<li>{e(counts.get('files', '?'))} files, {size(sizes.get('files_bytes'))}; stored {size(sizes.get('layer_bytes'))}"
            f"; {e(info.get('duration_s'))} s</li><li>changes: {e(changes)}</li></ul>"
            f'<p><a href="{e(url("tree") + quote(tree) + "/")}">browse home</a> · '
            f'<a href="{e(url("tar") + quote(tree) + "/")}">download home as tar</a></p><ul>{extra}</ul>'
            + (f"<p>warnings: {e('; '.join(info['warnings']))}</p>" if info.get("warnings") else ""))
    return page(f"{entry} @ {ts}", body, [(entry, url("e", entry, trailing=True)), (ts, url("e", entry, ts, trailing=True))])


def tree_page(path: str, rows: list[tuple[str, bool, int, str]]) -> bytes:
    base = path.rstrip("/")
    out = []
    for name, directory, nbytes, mtime in rows:
        target = quote(f"{base}/{name}")
        if directory:
            out.append([f'<a href="{e(url("tree") + target)}/">{e(name)}/</a>', "",
                        f'<a href="{e(url("tar") + target)}/">tar</a>', e(mtime)])
        else:
            out.append([f'<a href="{e(url("file") + target)}">{e(name)}</a>', size(nbytes),
                        f'<a href="{e(url("versions") + target)}">versions</a>', e(mtime)])
    up = base.rsplit("/", 1)[0]
    body = (f'<p><a href="{e(url("tree") + quote(up))}/">..</a> · <a href="{e(url("tar") + quote(base))}/">'
            f"download this directory as tar</a></p>" + table(["name", "size", "", "modified (UTC)"], out,
                                                               numeric=frozenset({1})))
    return page(path, body)


def versions_page(path: str, rows: list[tuple[str, str, int | None, str]], limit: int) -> bytes:
    """One file of a backup in the entry's other backups: where it changed, where it was the same, where absent."""
    out = []
    for ts, state, nbytes, mtime in rows:
        where = path.split("/", 4)  # ['', 'entries', entry, ts, rest]
        target = quote(f"/entries/{where[2]}/{ts}/{where[4]}") if len(where) == 5 else ""
        link = f'<a href="{e(url("file") + target)}">download</a>' if nbytes is not None else ""
        out.append([e(ts), e(state), size(nbytes), e(mtime), link])
    body = (f"<p>the newest {limit} backups of the entry, newest first</p>"
            + table(["backup", "", "size", "modified (UTC)", ""], out, numeric=frozenset({2})))
    return page(f"versions of {path}", body)
