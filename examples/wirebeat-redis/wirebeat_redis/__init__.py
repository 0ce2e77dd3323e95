"""Redis (RESP) transactions for wirebeat: the worked plug-in of docs/decoders.md."""
from wirebeat_redis.decoder import DECODER

__all__ = ["DECODER"]
