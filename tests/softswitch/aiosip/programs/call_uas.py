"""A phone that answers: every INVITE rings briefly, is picked up, and stays up until the
caller hangs up.

    python call_uas.py -p udp --port 5080

Ctrl-C stops it (calls still up are hung up first).
"""

import argparse
import asyncio
import signal

from softswitch import aiosip

TRANSPORTS = {"udp": aiosip.UDP, "tcp": aiosip.TCP, "ws": aiosip.WS}


class AnsweringDialplan(aiosip.BaseDialplan):
    """Sends INVITEs to the answering machine; anything else gets aiosip's 501."""

    def __init__(self, ring_time):
        self.ring_time = ring_time

    async def resolve(self, *args, **kwargs):
        await super().resolve(*args, **kwargs)
        if kwargs["method"] == "INVITE":
            return self.pick_up
        return None

    async def pick_up(self, request, message):
        caller = message.from_details["uri"]["user"]
        dialog = await request.prepare(status_code=100)
        await dialog.reply(message, status_code=180)
        print(f"ringing: {caller}")
        await asyncio.sleep(self.ring_time)
        await dialog.reply(message, status_code=200)
        print(f"answered: {caller}")
        async for in_call in dialog:
            if in_call.method == "BYE":  # the stack has already said 200 to it
                print(f"hung up by: {caller}")
                break
            await dialog.reply(in_call, status_code=200)


async def serve(options):
    loop = asyncio.get_running_loop()
    app = aiosip.Application(loop=loop, dialplan=AnsweringDialplan(options.ring))
    host, port = await app.run(
        protocol=TRANSPORTS[options.protocol], local_addr=(options.host, options.port)
    )
    print(f"listening on {host}:{port}")

    interrupted = asyncio.Event()
    loop.add_signal_handler(signal.SIGINT, interrupted.set)
    await interrupted.wait()
    print("shutting down")
    await app.close()


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--protocol", choices=TRANSPORTS, default="udp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--ring", type=float, default=0.2, help="seconds of ringing")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(serve(arguments()))
