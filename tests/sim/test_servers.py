"""sim/servers.py: the simulated venue served over TCP (market data over UDP, fault injection), and the
`orchestrator sim-oms` process."""
import asyncio
import signal
import socket
import struct
import subprocess
import sys

import pytest
import uvloop

from engine.cli import peers
from kernels.dtypes import EXEC_ACK, EXEC_FILL, MSG_EXECUTION_REPORT, SIDE_BUY
from sim import servers
from tests.sim.sim_kit import INSTANT, T0, config, engine_order_frame, kinds, order, quote
from wire.frames import encode_frame, iter_frames
from wire.schema import Signal


# ---------------------------------------------------------------------------------------------- TCP server
async def _read_reports(reader, count, timeout=5.0):
    """Read frames off a TCP stream until `count` reports have come (or EOF); return them."""
    buf, out = b"", []
    deadline = asyncio.get_running_loop().time() + timeout
    while len(out) < count:
        left = deadline - asyncio.get_running_loop().time()
        assert left > 0, f"got {len(out)} of {count} reports"
        data = await asyncio.wait_for(reader.read(65536), left)
        if not data:
            break
        buf += data
        end = 0
        while len(buf) - end >= 8:
            size = 8 + struct.unpack_from("<I", buf, end)[0]
            if len(buf) - end < size:
                break
            end += size
        out += [m for t, m in iter_frames(buf[:end]) if t == MSG_EXECUTION_REPORT]
        buf = buf[end:]
    return out


def _serve_in_loop(body, **server_args):
    async def main():
        server = await servers.SimOmsServer(**server_args).start()
        try:
            return await body(server)
        finally:
            await server.close()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main())


def test_sim_oms_server_when_orders_over_tcp_then_reports_come_back_on_the_connection():
    async def body(server):
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"".join(engine_order_frame(order(i, price=100.0 + i)) for i in range(200)))
        reports = await _read_reports(reader, 400)
        writer.close()
        await writer.wait_closed()
        return reports, server.totals()
    reports, totals = _serve_in_loop(body, config=config(ack_latency_us=100, fill_latency_us=300))
    assert [(r.order_id, r.exec_type) for r in reports if r.exec_type == EXEC_FILL] == \
        [(i, EXEC_FILL) for i in range(200)]
    assert kinds(reports).count(EXEC_ACK) == 200
    assert totals["orders"] == 200 and totals["reports"] == 400 and totals["connections"] == 1


def test_sim_oms_server_when_market_data_over_udp_then_resting_orders_fill_against_it():
    async def body(server):
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            udp.sendto(encode_frame(quote(99.0, 101.0)), server.market_data_address)
            while server.counts["market_data"] < 1:
                await asyncio.sleep(0.001)
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(encode_frame(order(1, SIDE_BUY, price=100.0)) + encode_frame(order(2, SIDE_BUY, price=102.0)))
            first = await _read_reports(reader, 3)
            udp.sendto(encode_frame(quote(98.0, 99.5)) + encode_frame(Signal(0, 1, 1, 0, 0, 0.5, 1.0, T0, 0)),
                       server.market_data_address)
            second = await _read_reports(reader, 1)
            writer.close()
            await writer.wait_closed()
        finally:
            udp.close()
        return first, second, server.totals()
    first, second, totals = _serve_in_loop(body, config=config(**INSTANT), market_data_port=0)
    assert [(r.order_id, r.exec_type, r.price) for r in first] == [(1, EXEC_ACK, 100.0), (2, EXEC_ACK, 102.0),
                                                                  (2, EXEC_FILL, 101.0)]
    assert [(r.order_id, r.exec_type, r.price) for r in second] == [(1, EXEC_FILL, 100.0)]
    assert totals["market_data"] == 2 and totals["market_data_bad_type"] == 1


def test_sim_oms_server_when_drop_after_n_then_each_connection_closes_after_its_nth_order():
    async def body(server):
        got = []
        for _ in range(2):
            reader, writer = await asyncio.open_connection(*server.address)
            writer.write(b"".join(encode_frame(order(i)) for i in range(10)))
            got.append(await _read_reports(reader, 100))  # ends at EOF
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()
        return got, server.totals()
    got, totals = _serve_in_loop(body, config=config(**INSTANT), drop_after=3)
    for reports in got:
        assert [(r.order_id, r.exec_type) for r in reports] == [(i, t) for i in range(3) for t in (EXEC_ACK, EXEC_FILL)]
    assert totals["dropped"] == 2 and totals["orders"] == 6 and totals["connections"] == 2


def test_sim_oms_server_when_stall_then_no_report_until_the_stall_ends():
    async def body(server):
        reader, writer = await asyncio.open_connection(*server.address)
        start = asyncio.get_running_loop().time()
        writer.write(b"".join(encode_frame(order(i)) for i in range(5)))
        reports = await _read_reports(reader, 10)
        waited = asyncio.get_running_loop().time() - start
        writer.close()
        await writer.wait_closed()
        return reports, waited, server.totals()
    reports, waited, totals = _serve_in_loop(body, config=config(**INSTANT), stall_ms=300)
    assert len(reports) == 10 and waited >= 0.25 and totals["stalls"] == 1


def test_sim_oms_server_when_stall_after_n_then_back_pressure_reaches_the_client():
    """Orders past the N-th wait in the socket; a client writing a lot sees its buffer fill."""
    async def body(server):
        sock = socket.create_connection(server.address)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 16)
            sock.setblocking(False)
            frame = encode_frame(order(1))
            written = 0
            loop = asyncio.get_running_loop()
            for _ in range(200_000):  # at most ~14 MB
                try:
                    written += sock.send(frame * 100)
                except BlockingIOError:
                    break
                await asyncio.sleep(0)
            else:
                pytest.fail("the server never pushed back")
            stalled_at = server.totals()["orders"]
            await asyncio.sleep(0.05)
            assert server.totals()["orders"] == stalled_at  # still stalled: nothing more taken
            deadline = loop.time() + 5
            while server.totals()["orders"] == stalled_at:  # the stall ends, reading resumes
                assert loop.time() < deadline
                await asyncio.sleep(0.01)
        finally:
            sock.close()
        return stalled_at, server.totals()
    stalled_at, totals = _serve_in_loop(body, config=config(**INSTANT), stall_ms=400, stall_after=5)
    assert stalled_at == 5 and totals["stalls"] == 1


def test_sim_oms_process_serves_then_prints_a_summary_on_sigterm():
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "sim-oms", "--port", "0", "--ack-latency-us", "0",
                             "--fill-latency-us", "0", "--fee-per-unit", "0.5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline()
        assert ready.startswith("sim-oms listening on tcp 127.0.0.1:"), ready + proc.stderr.read()
        port = int(ready.strip().rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(encode_frame(order(7, qty=4)))
            data = b""
            while len(list(iter_frames(data[:_whole(data)]))) < 2:
                chunk = sock.recv(4096)
                assert chunk, "connection closed early"
                data += chunk
            reports = [m for _, m in iter_frames(data)]
        assert [(r.order_id, r.exec_type, r.fee) for r in reports] == [(7, EXEC_ACK, 0.0), (7, EXEC_FILL, 2.0)]
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    summary = out.strip().splitlines()[-1]
    assert summary.startswith("sim-oms: ") and " orders=1 " in summary and " fills=1 " in summary


def _whole(data):
    end = 0
    while len(data) - end >= 8 and len(data) - end >= 8 + struct.unpack_from("<I", data, end)[0]:
        end += 8 + struct.unpack_from("<I", data, end)[0]
    return end


def test_sim_oms_cli_when_config_value_out_of_range_then_exits_naming_the_key(tmp_path):
    path = tmp_path / "sim.toml"
    path.write_text("[sim_oms]\nreject_ratio = 1.5\n")
    parser = peers.add_sim_oms_arguments(__import__("argparse").ArgumentParser())
    with pytest.raises(SystemExit, match=r"reject_ratio"):
        peers.sim_oms_config_from_args(parser.parse_args(["--config", str(path)]))
    args = parser.parse_args(["--config", str(path), "--reject-ratio", "0.25", "--seed", "9"])
    assert peers.sim_oms_config_from_args(args) == config(reject_ratio=0.25, seed=9)
