"""A registrar that is also a back-to-back presence relay.

Users listed with ``--account user:password`` register their address here (digest
authentication). A SUBSCRIBE to a registered user is not forwarded: the relay places its
own subscription with that user, and passes the NOTIFYs, renewals and the final
``Expires: 0`` between the two independent dialogs.

    python registrar.py -p udp --port 5070 --account bob:secret

Ctrl-C stops it.
"""

import argparse
import asyncio
import signal

from softswitch import aiosip

TRANSPORTS = {"udp": aiosip.UDP, "tcp": aiosip.TCP, "ws": aiosip.WS}
REALM = "registrar.test"


class RegistrarDialplan(aiosip.BaseDialplan):
    def __init__(self, accounts, protocol, host, port):
        self.accounts = accounts  # user -> password
        self.locations = {}  # user -> (host, port) from the Contact it registered
        self.protocol = protocol
        self.me = f"{host}:{port}"

    async def resolve(self, *args, **kwargs):
        await super().resolve(*args, **kwargs)
        handlers = {"REGISTER": self.registration, "SUBSCRIBE": self.relay_subscription}
        return handlers.get(kwargs["method"])

    # -- registrations --------------------------------------------------------------

    async def registration(self, request, message):
        user = message.to_details["uri"]["user"]
        password = self.accounts.get(user)
        if password is None:
            await request.prepare(status_code=403)
            return
        dialog = await request.prepare(status_code=100)
        await dialog.unauthorized(message, realm=REALM)
        # The same REGISTER again with credentials, then refreshes, arrive in the dialog.
        async for attempt in dialog:
            if not dialog.validate_auth(attempt, password):
                await dialog.unauthorized(attempt, realm=REALM)
                continue
            expires = int(attempt.headers.get("Expires", 3600))
            if expires:
                uri = attempt.contact_details["uri"]
                self.locations[user] = (uri["host"], uri["port"])
                print(f"registered {user} at {uri['host']}:{uri['port']}")
            else:
                self.locations.pop(user, None)
                print(f"unregistered {user}")
            await dialog.reply(
                attempt,
                status_code=200,
                headers={"Expires": expires, "Contact": attempt.headers["Contact"]},
            )
            if not expires:
                break

    # -- the relay ------------------------------------------------------------------

    async def relay_subscription(self, request, message):
        watcher = message.from_details["uri"]["user"]
        target = message.to_details["uri"]["user"]
        location = self.locations.get(target)
        if location is None:
            print(f"{watcher} asked for {target}, who is not registered")
            await request.prepare(status_code=404)
            return

        expires = int(message.headers.get("Expires", 3600))
        front = await request.prepare(status_code=100)  # the watcher's side
        peer = await front.app.connect(location, protocol=self.protocol)
        back = await peer.subscribe(  # our own subscription with the target
            expires=expires,
            from_details=aiosip.Contact.from_header(f"sip:{watcher}@{self.me}"),
            to_details=aiosip.Contact.from_header(f"sip:{target}@{location[0]}:{location[1]}"),
            headers={"Event": message.headers.get("Event", "presence")},
        )
        await front.reply(message, status_code=back.status_code, headers={"Expires": expires})
        if back.status_code != 200:
            return
        print(f"relaying {target} to {watcher}")

        watcher_left = False

        async def pass_notifies():
            async for notify in back:
                state = notify.headers.get("Subscription-State", "active")
                if state.startswith("terminated"):
                    break  # the stack has answered it; the back side is over
                answer = await front.notify(payload=notify.payload)
                await back.reply(notify, status_code=answer.status_code)
            if not watcher_left:  # the target ended it: so do we, towards the watcher
                await front.close()

        passing = asyncio.ensure_future(pass_notifies())
        async for renewal in front:
            expires = int(renewal.headers.get("Expires", 0))
            if expires:
                answer = await back.refresh(expires=expires)
                await front.reply(renewal, answer.status_code, headers={"Expires": expires})
                continue
            watcher_left = True
            await back.close()
            await passing  # the last NOTIFYs reach the watcher before its subscription ends
            await front.reply(renewal, status_code=200, headers={"Expires": 0})
            print(f"{watcher} stopped watching {target}")
            break
        await passing


async def serve(options):
    loop = asyncio.get_running_loop()
    accounts = dict(account.split(":", 1) for account in options.account)
    protocol = TRANSPORTS[options.protocol]
    dialplan = RegistrarDialplan(accounts, protocol, options.host, options.port)
    app = aiosip.Application(loop=loop, dialplan=dialplan)
    host, port = await app.run(protocol=protocol, local_addr=(options.host, options.port))
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
    parser.add_argument("--account", action="append", default=[], help="user:password")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(serve(arguments()))
