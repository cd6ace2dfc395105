"""A phone that calls: dials the answering UAS, shows each response, talks for a moment,
then hangs up.

    python call_uac.py -p udp --server-port 5080 --local-port 5081 -d 1
"""

import argparse
import asyncio
import sys

from softswitch import aiosip

TRANSPORTS = {"udp": aiosip.UDP, "tcp": aiosip.TCP, "ws": aiosip.WS}


async def place_call(options):
    app = aiosip.Application(loop=asyncio.get_running_loop())
    here = (options.host, options.local_port)
    there = (options.host, options.server_port)
    peer = await app.connect(there, protocol=TRANSPORTS[options.protocol], local_addr=here)

    caller = aiosip.Contact.from_header(f"sip:{options.user}@{here[0]}:{here[1]}")
    callee = aiosip.Contact.from_header(f"sip:{options.callee}@{there[0]}:{there[1]}")
    call = await peer.invite(from_details=caller, to_details=callee)

    async for response in call.wait_for_terminate():
        print(f"{response.status_code} {response.status_message}")

    answered = call.status_code == 200
    if answered:
        print("talking")
        await asyncio.sleep(options.duration)
        goodbye = await call.close()
        print(f"hung up: {goodbye.status_code}")
    else:
        print(f"no answer: {call.status_code}")
    await app.close()
    return 0 if answered else 1


def arguments():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-p", "--protocol", choices=TRANSPORTS, default="udp")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--server-port", type=int, required=True)
    parser.add_argument("--local-port", type=int, required=True)
    parser.add_argument("-u", "--user", default="caller")
    parser.add_argument("--callee", default="answerer")
    parser.add_argument("-d", "--duration", type=float, default=1.0, help="seconds of talk")
    return parser.parse_args()


if __name__ == "__main__":
    sys.exit(asyncio.run(place_call(arguments())))
