"""A `"type": "function"` component: plain functions called on join and
leave, as Crossbar.io's callbacks."""


async def on_join(session, details):
    await session.register(lambda text: f"fn: {text}", "com.example.fn_echo")
    print(f"on_join called for {details.realm}", flush=True)


def on_leave(session, details):
    print(f"on_leave called: {details.reason}", flush=True)
