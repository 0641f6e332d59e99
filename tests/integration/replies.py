"""Reply helpers the integration tests share: redis-py hands back bytes or
str, lists or dicts, depending on RESP2/RESP3 and decode_responses."""


def text(v):
    """Decode bytes (recursively) so RESP2/RESP3 replies compare alike."""
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, dict):
        return {text(k): text(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [text(x) for x in v]
    return v


def pairs(a):
    """A name/value reply (RESP2 flat list or RESP3 map) as a dict of str."""
    a = text(a)
    return a if isinstance(a, dict) else dict(zip(a[::2], a[1::2]))
