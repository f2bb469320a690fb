"""The node runtime: one asyncio task owns a RaftCore and drives it with a Storage and a
Transport (node), applies committed entries (applier, sessions), answers client requests
(requests) and is built from settings (settings, runtime)."""
