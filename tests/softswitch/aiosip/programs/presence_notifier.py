"""A presence source: accepts SUBSCRIBE, then publishes a numbered status in a NOTIFY every
interval until the watcher lets the subscription go (a refresh with ``Expires: 0``).

    python presence_notifier.py -p udp --port 5090
    python presence_notifier.py -p udp --port 5090 --register-at 5070 -u bob --password pw

With ``--register-at`` it first registers its address with a registrar (digest auth), so
that watchers can reach it through that registrar. Ctrl-C stops it (and unregisters).
"""

import argparse
import asyncio
import contextlib
import signal

from softswitch import aiosip

TRANSPORTS = {"udp": aiosip.UDP, "tcp": aiosip.TCP, "ws": aiosip.WS}


class PresenceDialplan(aiosip.BaseDialplan):
    def __init__(self, interval):
        self.interval = interval

    async def resolve(self, *args, **kwargs):
        await super().resolve(*args, **kwargs)
        if kwargs["method"] == "SUBSCRIBE":
            return self.accept_watcher
        return None

    async def accept_watcher(self, request, message):
        watcher = message.from_details["uri"]["user"]
        expires = int(message.headers.get("Expires", 3600))
        subscription = await request.prepare(status_code=200, headers={"Expires": expires})
        print(f"watched by {watcher} for {expires}s")

        quiet = asyncio.Event()
        publishing = asyncio.ensure_future(self.publish(subscription, quiet))
        try:
            async for renewal in subscription:
                expires = int(renewal.headers.get("Expires", 0))
                if expires == 0:
                    # Finish the NOTIFY in flight while the watcher still listens.
                    quiet.set()
                    await publishing
                await subscription.reply(renewal, status_code=200, headers={"Expires": expires})
                if expires == 0:
                    print(f"{watcher} stopped watching")
                    break
                print(f"{watcher} renewed for {expires}s")
        finally:
            quiet.set()
            publishing.cancel()

    async def publish(self, subscription, quiet):
        update = 0
        while not quiet.is_set():
            update += 1
            await subscription.notify(payload=f"update {update}")
            with contextlib.suppress(TimeoutError):  # no news is the usual case
                await asyncio.wait_for(quiet.wait(), self.interval)


async def register(app, options, my_port):
    protocol = TRANSPORTS[options.protocol]
    registrar = await app.connect((options.host, options.register_at), protocol=protocol)
    aor = aiosip.Contact.from_header(f"sip:{options.user}@{options.host}:{options.register_at}")
    reachable_at = aiosip.Contact.from_header(f"sip:{options.user}@{options.host}:{my_port}")
    registration = await registrar.register(
        expires=300,
        from_details=aor,
        to_details=aor,
        contact_details=reachable_at,
        password=options.password,
    )
    print(f"registration: {registration.status_code}")


async def serve(options):
    loop = asyncio.get_running_loop()
    app = aiosip.Application(loop=loop, dialplan=PresenceDialplan(options.interval))
    host, port = await app.run(
        protocol=TRANSPORTS[options.protocol], local_addr=(options.host, options.port)
    )
    print(f"listening on {host}:{port}")
    if options.register_at:
        await register(app, options, port)

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
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between NOTIFYs")
    parser.add_argument("--register-at", type=int, help="a registrar's port")
    parser.add_argument("-u", "--user", default="presence")
    parser.add_argument("--password", default="")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(serve(arguments()))
