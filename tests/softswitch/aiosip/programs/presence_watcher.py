"""A presence watcher: subscribes to a user, prints every NOTIFY, renews the subscription
a few times, then lets it go with ``Expires: 0``.

    python presence_watcher.py -p udp --server-port 5090 --local-port 5091 --renewals 2
"""

import argparse
import asyncio
import sys

from softswitch import aiosip

TRANSPORTS = {"udp": aiosip.UDP, "tcp": aiosip.TCP, "ws": aiosip.WS}


async def show_updates(subscription):
    async for notify in subscription:  # ends with the subscription
        await subscription.reply(notify, status_code=200)
        if notify.payload:
            print(f"notified: {notify.payload}")


async def watch(options):
    loop = asyncio.get_running_loop()
    app = aiosip.Application(loop=loop)
    here = (options.host, options.local_port)
    there = (options.host, options.server_port)
    peer = await app.connect(there, protocol=TRANSPORTS[options.protocol], local_addr=here)

    subscription = await peer.subscribe(
        expires=options.expires,
        from_details=aiosip.Contact.from_header(f"sip:{options.user}@{here[0]}:{here[1]}"),
        to_details=aiosip.Contact.from_header(f"sip:{options.target}@{there[0]}:{there[1]}"),
        headers={"Event": "presence"},
    )
    if subscription.status_code != 200:
        print(f"refused: {subscription.status_code}")
        await app.close()
        return 1

    updates = asyncio.ensure_future(show_updates(subscription))
    for _ in range(options.renewals):
        await asyncio.sleep(options.pause)
        renewed = await subscription.refresh(expires=options.expires)
        print(f"renewed: {renewed.status_code}")
    await asyncio.sleep(options.pause)

    ended = await subscription.close()  # SUBSCRIBE with Expires: 0
    await updates
    print(f"unsubscribed: {ended.status_code}")
    await app.close()
    return 0


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--protocol", choices=TRANSPORTS, default="udp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--local-port", type=int, required=True)
    parser.add_argument("-u", "--user", default="watcher")
    parser.add_argument("--target", default="presence", help="the user to watch")
    parser.add_argument("--renewals", type=int, default=2, help="refreshes before leaving")
    parser.add_argument("--pause", type=float, default=0.4, help="seconds between them")
    parser.add_argument("--expires", type=int, default=60)
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(watch(arguments())))
