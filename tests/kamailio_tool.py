"""Kamailio for the tests: a real SIP balancer (Debian's ``kamailio``) on loopback.

``running_balancer(nodes)`` starts ``kamailio`` in the foreground with a configuration that
does what docs/deployment.md tells an operator to: the dispatcher module spreads new
requests over ``nodes`` (round robin, algorithm 4), each forwarded statefully (``tm``) with
the client's address named in ``X-AUTH-IP``/``X-AUTH-PORT`` after removing any the client
sent. A REGISTER gets a ``Path`` naming the balancer with the client's address
(``add_path_received``, RFC 3327): a node's call to that client comes back to the balancer
with the Path as its Route, and the balancer relays it to the client (``loose_route``, the
path module's ``use_received``); a node's request is told from a client's by its source
(``ds_is_from_list``) and gets no ``X-AUTH-IP``. The balancer record-routes only those
calls to registered clients; a client's call follows the Record-Route of the node that took
it (``loose_route``), through the balancer when the client sends its later requests there,
as SIPp does. It returns once Kamailio listens and stops it (SIGTERM, then SIGKILL)
afterwards.

A missing binary fails the test under CI (the test command installs the package) and skips
it elsewhere, like ``redis_tool`` and ``postgres_tool``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from loopback_ports import LOCAL, free_port

__all__ = ["FRONT_DOOR", "Balancer", "kamailio_binary", "running_balancer"]

#: What both scripts start with: one worker on ``{host}:{port}`` (UDP), the modules both use.
_PREAMBLE = """#!KAMAILIO
debug=2
log_stderror=yes
fork=yes
children=1
tcp_children=1
disable_tcp=yes
listen=udp:{host}:{port}

mpath="{modules}"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "xlog.so"
loadmodule "dispatcher.so"
"""

#: The balancer's script. ``remove_hf`` first, for every request: a client's own X-AUTH-IP
#: must never reach the switch as if the balancer had written it.
CONFIG = (
    _PREAMBLE
    + """loadmodule "path.so"
loadmodule "nathelper.so"

modparam("dispatcher", "list_file", "{list_file}")
modparam("path", "use_received", 1)

request_route {{
    # Every request first, in-dialog ones too: a client can send a To tag and a Route naming
    # the switch, and the in-dialog branch below would forward its own X-AUTH-IP otherwise;
    # and a client's own Path would tell the switch where to send an account's calls.
    remove_hf("X-AUTH-IP");
    remove_hf("X-AUTH-PORT");
    remove_hf("Path");
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    # A node's request, told by its address alone (mode 3: any port, any protocol): a node
    # with several workers sends from each worker's own port, not the one listed here.
    if (ds_is_from_list("1", "3")) {{
        # A node's request to a client registered through here: its Route is the Path
        # this balancer wrote, whose received= names the client's address. loose_route()
        # answers -3 for such a pre-loaded Route (an initial request), having set $du.
        # The call is record-routed, and the client's Contact in its answers fixed to the
        # address they came from: a client behind a NAT is reached only there, by the
        # call's later requests too.
        $var(routed) = loose_route();
        if ($var(routed) == -3 && is_method("INVITE")) {{
            record_route();
            t_on_reply("FROM_CLIENT");
        }}
        if ($var(routed) > 0 || $var(routed) == -3) {{
            t_relay();
        }} else if (is_method("CANCEL|ACK") && t_check_trans()) {{
            t_relay();
        }} else {{
            sl_send_reply("404", "Not Here");
        }}
        exit;
    }}
    append_hf("X-AUTH-IP: $si\\r\\nX-AUTH-PORT: $sp\\r\\n");
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (is_method("REGISTER")) {{
        # Never by the in-dialog branch (a To tag would take it past add_path), and always
        # with this balancer's Path: a client's own was removed above.
        add_path_received();
    }} else if (has_totag()) {{
        # the node's Record-Route says where the dialog lives
        if (loose_route()) {{
            t_relay();
        }} else if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
        }} else {{
            sl_send_reply("404", "Not Here");
        }}
        exit;
    }}
    if (!ds_select_dst("1", "4")) {{
        sl_send_reply("503", "No Node");
        exit;
    }}
    xlog("L_INFO", "$rm $ci from $si:$sp to $du\\n");
    t_relay();
}}

onreply_route[FROM_CLIENT] {{
    if (nat_uac_test("19")) {{
        fix_nated_contact();
    }}
}}
"""
)


#: A carrier's front door (``running_balancer(gateways, script=FRONT_DOOR)``): it spreads
#: INVITEs over the carrier's media gateways and stays out of their dialogs (no
#: Record-Route), so the gateway that answers is reached at its Contact. A request in a
#: dialog is handled as Kamailio's default script does (``route[WITHINDLG]``): it follows its
#: Route, an ACK of a transaction still held goes on, anything else is not ours (404).
FRONT_DOOR = (
    _PREAMBLE
    + """
modparam("dispatcher", "list_file", "{list_file}")

request_route {{
    if (!mf_process_maxfwd_header("10")) {{
        sl_send_reply("483", "Too Many Hops");
        exit;
    }}
    if (has_totag()) {{
        if (loose_route()) {{
            t_relay();
        }} else if (is_method("ACK")) {{
            if (t_check_trans()) {{
                t_relay();
            }}
        }} else {{
            xlog("L_INFO", "not here: $rm $ci from $si:$sp\n");
            sl_send_reply("404", "Not here");
        }}
        exit;
    }}
    if (is_method("CANCEL")) {{
        if (t_check_trans()) {{
            t_relay();
        }}
        exit;
    }}
    if (!ds_select_dst("1", "4")) {{
        sl_send_reply("503", "No Gateway");
        exit;
    }}
    xlog("L_INFO", "$rm $ci from $si:$sp to $du\n");
    t_relay();
}}
"""
)


def kamailio_binary() -> str:
    """Kamailio (in /usr/sbin, off a user's PATH); fail under CI, skip elsewhere."""
    path = shutil.which("kamailio") or shutil.which("kamailio", path="/usr/sbin:/usr/local/sbin")
    if path is None:
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail("kamailio is not installed and CI is set: install kamailio")
        pytest.skip("kamailio is not installed (Debian package kamailio)")
    return path


def _module_dir(binary: str) -> str:
    """Where the package put Kamailio's modules: Debian's multiarch folder (the machine's
    own triplet, not a hard-coded x86_64), or a source build's lib/kamailio/modules beside
    its sbin."""
    prefix = Path(binary).resolve().parent.parent
    found = sorted(prefix.glob("lib/*/kamailio/modules/dispatcher.so")) + sorted(
        prefix.glob("lib*/kamailio/modules/dispatcher.so")
    )
    if not found:
        pytest.fail(f"no kamailio modules (dispatcher.so) under {prefix}/lib*: is kamailio whole?")
    return f"{found[0].parent}/"


@dataclass
class Balancer:
    """A running Kamailio: where it listens, its process and its log."""

    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def address(self) -> str:
        return f"{LOCAL}:{self.port}"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> int:
        """SIGTERM to its process group (Kamailio forks its workers), then SIGKILL."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def _listening(port: int) -> bool:
    """Whether 127.0.0.1:``port`` is taken for UDP (Kamailio bound it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind((LOCAL, port))
        except OSError:
            return True
    return False


@contextlib.contextmanager
def running_balancer(
    nodes: Sequence[str], *, script: str = CONFIG, start_timeout: float = 10.0
) -> Iterator[Balancer]:
    """Kamailio's dispatcher over ``nodes`` (``host:port`` each), for the ``with`` block;
    ``script``: the switch's balancer (``CONFIG``) or a carrier's ``FRONT_DOOR``."""
    binary = kamailio_binary()
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="kamailio-")))
        list_file = root / "dispatcher.list"
        list_file.write_text("".join(f"1 sip:{node}\n" for node in nodes))
        port = free_port()
        config = root / "kamailio.cfg"
        config.write_text(
            script.format(host=LOCAL, port=port, list_file=list_file, modules=_module_dir(binary))
        )
        log_path = root / "kamailio.log"
        command = [
            binary,
            "-f", str(config),
            "-DD",  # no daemon: stays this process, its workers its children
            "-E",  # log to stderr (the log file)
            "-m", "32",
            "-M", "4",
            "-Y", str(root),
            "-P", str(root / "kamailio.pid"),
        ]  # fmt: skip
        log_file = stack.enter_context(log_path.open("wb"))
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            cwd=root,
            start_new_session=True,
        )
        balancer = Balancer(process, port, log_path)
        stack.callback(balancer.stop)
        deadline = time.monotonic() + start_timeout
        while not _listening(port):
            if process.poll() is not None or time.monotonic() > deadline:
                balancer.stop()
                pytest.fail(
                    f"kamailio did not start (exit code {process.returncode}):\n"
                    f"{' '.join(command)}\n{balancer.log()[-3000:]}"
                )
            time.sleep(0.05)
        yield balancer
