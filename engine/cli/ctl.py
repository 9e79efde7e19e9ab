"""`orchestrator ctl`: the operator's client of a running engine's REST API (docs/api.md), over HTTP.

Human tables by default, the API's own JSON with --json. Where: --url (or $ORCHESTRATOR_URL, default
http://127.0.0.1:47300); who: --token (or $ORCHESTRATOR_TOKEN). Every command goes with an Idempotency-Key
(--id, or a fresh one), so the id in its answer finds it again: `ctl command ID`.

Exit codes: 0 done; 1 refused by the engine (the API answered an error: an illegal transition, an unknown
name, a value out of range, a reload refused); 2 usage; 3 cannot reach the API (nothing listening, no answer,
not the API); 4 auth (no token, a wrong one, or a role that may not do it).
"""
import argparse
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
import uuid

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH = 0, 1, 2, 3, 4
DEFAULT_URL = "http://127.0.0.1:47300"
TIMEOUT_S = 10.0
TRANSITIONS = ("activate", "pause", "resume", "reduce", "halt", "reset", "deactivate", "retire")


class Unreachable(Exception):
    """No answer from an API at that URL."""


class Answer:
    def __init__(self, status, data):
        self.status, self.data = status, data

    @property
    def ok(self):
        return 200 <= self.status < 300


def call(args, method, path, body=None):
    """One request to the API; an Answer (any status), or Unreachable."""
    url = args.url.rstrip("/") + path
    headers = {"Accept": "application/json"}
    if args.token:
        headers["Authorization"] = f"Bearer {args.token}"
    data = None
    if method == "POST":
        headers["Content-Type"] = "application/json"
        headers["Idempotency-Key"] = args.id or f"ctl-{uuid.uuid4().hex[:16]}"
        data = json.dumps(body or {}).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            return Answer(response.status, _json(response.read(), url))
    except urllib.error.HTTPError as e:
        with e:
            return Answer(e.code, _json(e.read(), url))
    # refused, timed out, not HTTP (or not the API), a bad URL
    except (urllib.error.URLError, OSError, http.client.HTTPException, ValueError) as e:
        raise Unreachable(f"cannot reach the API at {args.url}: {getattr(e, 'reason', e)}") from None


def _json(raw, url):
    try:
        return json.loads(raw)
    except ValueError:
        raise Unreachable(f"{url} did not answer JSON: is it the orchestrator's API?") from None


# ---------------------------------------------------------------------------------------------- printing
def _console():
    from rich.console import Console
    console = Console(highlight=False, markup=False)
    if not console.is_terminal:  # a pipe or a file: whole lines, not the 80 columns rich assumes
        console.width = 200
    return console


def _table(title, columns, rows, left=2):
    """A table whose first `left` columns are text (left-aligned) and the rest numbers."""
    from rich.table import Table
    table = Table(title=title, title_justify="left")
    for index, column in enumerate(columns):
        table.add_column(column, justify="left" if index < left else "right")
    for row in rows:
        table.add_row(*map(str, row))
    return table


def _money(x):
    return f"{x:,.2f}"


def _positions(held):
    return ", ".join(f"{symbol} {qty:+d}" for symbol, qty in held.items()) or "flat"


def _why(s):
    """Why a strategy is in its state, in a few words: its breaker's trip, its kill switch, or the command that
    last moved it (the engine's halt_all says its reason)."""
    moved = s.get("moved_by") or {}
    if s["trip_cause"]:
        return f"tripped: {s['trip_cause']}"
    if s["kill"] or any(s.get("kill_switch", {}).values()):
        return "kill switch"
    if moved.get("command") == "halt_all":
        return f"{moved['policy']}: {moved['reason']}"
    if moved:
        return f"{moved['from']} -> {moved['to']} ({moved['id']})"
    return ""


def _strategies_table(strategies):
    return _table("strategies", ("strategy", "state", "why", "version", "deploy", "position", "P&L", "orders",
                                 "fills", "rejects"),
                  [(name, s["state"], _why(s), s["version"],
                    s["deploy"], _positions(s["positions"]), _money(s["pnl"]["net"]), s["orders"], s["fills"],
                    s["rejects"]) for name, s in strategies.items()], left=4)


def _show_status(health, strategies, counters):
    console = _console()
    c = counters["counters"]
    console.print(f"engine {health['engine']}: up {health['uptime_s']:,.1f} s, OMS link "
                  f"{'up' if health['oms_up'] else 'DOWN'}")
    console.print(_strategies_table(strategies))
    console.print(f"signals {c['signals']:,}  orders {c['orders']:,}  rejects {c['rejects']:,}  fills {c['fills']:,}  "
                  f"unsent {counters['engine']['orders_unsent']:,}")


def _show_strategy(name, s):
    console = _console()
    breaker, kill = s["breaker"], s["kill_switch"]
    why = [f"tripped by {breaker['trip_cause']}"] if breaker["trip_cause"] else []
    why += [f"{scope} kill switch on" for scope, on in kill.items() if on]
    moved = s.get("moved_by")
    if moved and moved["command"] == "halt_all":
        why.append(f"moved by the engine's halt_all ({moved['policy']}: {moved['reason']}, journal seq {moved['seq']})")
    elif moved:
        why.append(f"last moved {moved['from']} -> {moved['to']} by command {moved['id']} (journal seq {moved['seq']})")
    console.print(f"{name}: {s['state']}{' (' + '; '.join(why) + ')' if why else ''}; version "
                  f"{s['version']}, deploy {s['deploy']} ({s['config_hash'][:12]}); account {s['account']}")
    pnl = s["pnl"]
    console.print(f"P&L realized {_money(pnl['realized'])}, unrealized {_money(pnl['unrealized'])}, fees "
                  f"{_money(pnl['fees'])}; signals {s['signals']}, orders {s['orders']} ({s['open_orders']} open), "
                  f"fills {s['fills']}, rejects {s['rejects']['total']}")
    console.print(f"breaker: consecutive rejects {breaker['consecutive_rejects']}, window "
                  f"{breaker['window_rejects']}/{breaker['window_orders']} rejected, trips "
                  f"{', '.join(f'{k} {v}' for k, v in breaker['trips'].items()) or 'none'}; action {breaker['action']}")
    console.print(_table("positions", ("instrument", "qty", "open buy", "open sell", "avg price", "realized",
                                       "unrealized", "fees"),
                         [(symbol, p["qty"], p["open_buy"], p["open_sell"], f"{p['avg_price']:,.4f}",
                           _money(p["realized"]), _money(p["unrealized"]), _money(p["fees"]))
                          for symbol, p in s["positions"].items()], left=1))
    if s["rejects"]["by_reason"]:
        console.print("rejects by reason: " + ", ".join(f"{k} {v}" for k, v in s["rejects"]["by_reason"].items()))
    console.print("limits: " + "; ".join(f"{section}: " + ", ".join(f"{k} {v}" for k, v in values.items())
                                         for section, values in s["limits"].items()))
    console.print(_table("deploys", ("deploy", "version", "config hash", "by", "source"),
                         [(d["number"], d["version"], d["config_hash"][:12], d["actor"], d["source"])
                          for d in s["deploys"]], left=5))


def _show_accounts(accounts):
    _console().print(_table("accounts", ("account", "kill switch", "gross", "net", "P&L", "max gross", "max net",
                                         "daily loss limit"),
                            [(name, ", ".join(k for k, on in a["kill_switch"].items() if on) or "off",
                              _money(a["gross"]), _money(a["net"]),
                              _money(a["pnl"]["realized"] + a["pnl"]["unrealized"] - a["pnl"]["fees"]),
                              _money(a["limits"]["max_gross_notional"]), _money(a["limits"]["max_net_notional"]),
                              _money(a["limits"]["daily_loss_limit"])) for name, a in accounts.items()]))


def _show_result(result):
    detail = result["detail"]
    if "from" in detail:
        what = f"{detail['strategy']}: {detail['from']} -> {detail['to']}"
    else:
        what = ", ".join(f"{k} {v}" for k, v in detail.items())
    again = " (a retry: the first result)" if result["repeated"] else ""
    _console().print(f"{result['command']} done{again}: {what} [command {result['id']}, journal seq {result['seq']}]")


def _changes_table(changes):
    return _table("changes", ("file", "key", "running", "file says", "how", "command"),
                  [(c["file"], c["key"], _value(c["before"]), _value(c["after"]), c["how"], c["command"] or "")
                   for c in changes], left=6)


def _value(v):
    return "-" if v is None else json.dumps(v) if isinstance(v, (str, list, dict)) else str(v)


def _show_reload(result):
    console = _console()
    if not result["changes"]:
        console.print(f"reload done: {result['config']} is what runs, nothing to change")
        return
    console.print(_changes_table(result["changes"]))
    for r in result["commands"]:
        _show_result(r)
    console.print(f"reload done: {len(result['changes'])} changes, {len(result['commands'])} commands")


# ---------------------------------------------------------------------------------------------- commands
def _path(*parts):
    return "/" + "/".join(urllib.parse.quote(str(p), safe="") for p in parts)


def _limit_value(text):
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _requests(args):
    """[(method, path, body)] for the command asked, and how to print what comes back."""
    command = args.ctl
    if command == "status":
        return [("GET", "/health", None), ("GET", "/strategies", None), ("GET", "/counters", None)], _show_status
    if command == "strategies":
        return [("GET", "/strategies", None)], lambda s: _console().print(_strategies_table(s))
    if command == "show":
        return [("GET", _path("strategies", args.name), None)], lambda s: _show_strategy(args.name, s)
    if command == "accounts":
        return [("GET", "/accounts", None)], _show_accounts
    if command == "command":
        return [("GET", _path("commands", args.command_id), None)], _show_result
    if command in TRANSITIONS:
        return [("POST", _path("strategies", args.name, command), {})], _show_result
    if command == "register":
        return [("POST", "/strategies", {"file": args.file})], _show_result
    if command == "deploy":
        return [("POST", _path("strategies", args.name, "deploy"), {"file": args.file})], _show_result
    if command == "rollback":
        return [("POST", _path("strategies", args.name, "rollback"), {"to": args.to})], _show_result
    if command == "shadow":
        return [("POST", _path("strategies", args.name, "shadow"), {"on": args.on == "on", "file": args.file})], \
            _show_result
    if command == "limits":
        owner = "accounts" if args.account else "strategies"
        return [("POST", _path(owner, args.name, "limits"), dict(args.values))], _show_result
    if command == "kill":
        scope = "strategy" if args.strategy else "account" if args.account else "global"
        return [("POST", "/kill-switch", {"scope": scope, "name": args.strategy or args.account,
                                          "on": args.on == "on"})], _show_result
    if command == "reload":
        return [("POST", "/reload", {})], _show_reload
    raise AssertionError(command)


def run(args):
    if not getattr(args, "ctl", None):
        print("orchestrator ctl: name a command (orchestrator ctl --help lists them)", file=sys.stderr)
        return EXIT_USAGE
    args.url = getattr(args, "url", None) or os.environ.get("ORCHESTRATOR_URL") or DEFAULT_URL
    args.token = getattr(args, "token", None) or os.environ.get("ORCHESTRATOR_TOKEN")
    args.id = getattr(args, "id", None)
    as_json = getattr(args, "json", False)
    requests, show = _requests(args)
    answers = []
    try:
        for method, path, body in requests:
            answer = call(args, method, path, body)
            if not answer.ok:
                return _failed(answer, as_json)
            answers.append(answer.data)
    except Unreachable as e:
        print(f"orchestrator ctl: {e}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if as_json:
        print(json.dumps(answers[0] if len(answers) == 1 else answers, indent=2))
    else:
        show(*answers)
    return EXIT_OK


def _failed(answer, as_json):
    error = answer.data.get("error", {}) if isinstance(answer.data, dict) else {}
    if as_json:
        print(json.dumps(answer.data, indent=2))
    message = str(error.get("message", answer.data))
    field = error.get("field")
    where = f" (at {field})" if field and field not in message else ""
    print(f"orchestrator ctl: {answer.status} {error.get('code', '')}: {message}{where}", file=sys.stderr)
    reload = answer.data.get("reload") if isinstance(answer.data, dict) else None
    if reload and not as_json:  # a refused reload: every problem, and the diff it would have applied
        for problem in reload["problems"]:
            if problem not in message:
                print(f"  {problem}", file=sys.stderr)
        if reload["changes"]:
            _console().print(_changes_table(reload["changes"]))
    return EXIT_AUTH if answer.status in (401, 403) else EXIT_REFUSED


# ---------------------------------------------------------------------------------------------- arguments
def _key_value(text):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, _limit_value(value)


def add_parser(sub):
    """`ctl` among the CLI's subcommands `sub`, with its options and its own subcommands."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS,
                        help=f"the API ($ORCHESTRATOR_URL, default {DEFAULT_URL}; `run` prints it)")
    common.add_argument("--token", default=argparse.SUPPRESS, help="bearer token (default $ORCHESTRATOR_TOKEN)")
    common.add_argument("--json", action="store_true", default=argparse.SUPPRESS,
                        help="print the API's JSON answer, for scripts")
    common.add_argument("--id", default=argparse.SUPPRESS,
                        help="the command's Idempotency-Key (a retry with the same id is applied once)")
    ctl = sub.add_parser("ctl", parents=[common], help="operate a running engine through its REST API",
                         description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ctl.set_defaults(handler=run)
    commands = ctl.add_subparsers(dest="ctl", metavar="COMMAND")

    def command(name, help):
        return commands.add_parser(name, help=help, parents=[common], description=help)

    command("status", "the engine, its strategies and main counters")
    command("strategies", "every strategy: state, why, version, position, P&L")
    command("show", "one strategy in full: why it is in its state, positions, limits, deploys")\
        .add_argument("name")
    command("accounts", "every account: kill switches, exposure, limits")
    command("command", "the result of an applied command, by its id").add_argument("command_id", metavar="ID")
    for action in TRANSITIONS:
        command(action, f"{action} a strategy (the lifecycle table decides from which states)").add_argument("name")
    command("register", "add the strategy of a file in the config's strategies/").add_argument("file")
    deploy = command("deploy", "deploy a strategy's file (or --file) as its next version")
    deploy.add_argument("name")
    deploy.add_argument("--file", default=None, help="a file in strategies/ (default: the strategy's own)")
    rollback = command("rollback", "deploy again the version before (or deploy number --to)")
    rollback.add_argument("name")
    rollback.add_argument("--to", type=int, default=None, metavar="N")
    shadow = command("shadow", "run a version beside the live strategy, its orders never sent")
    shadow.add_argument("name")
    shadow.add_argument("on", choices=("on", "off"))
    shadow.add_argument("--file", default=None)
    limits = command("limits", "change limits live: KEY=VALUE ... (docs/api.md lists the keys)")
    limits.add_argument("name", help="a strategy (or, with --account, an account)")
    limits.add_argument("values", nargs="+", type=_key_value, metavar="KEY=VALUE")
    limits.add_argument("--account", action="store_true", help="NAME is an account")
    kill = command("kill", "a kill switch on or off: a strategy's, an account's, or the global one")
    scope = kill.add_mutually_exclusive_group(required=True)
    scope.add_argument("--strategy", metavar="S")
    scope.add_argument("--account", metavar="A")
    scope.add_argument("--global", action="store_true", dest="everything")
    kill.add_argument("on", choices=("on", "off"))
    command("reload", "reload the config directory: validate it, show the diff, apply it as commands (or refuse "
                      "it whole: a broken file, a restart-only key)")
