"""The real router process, wired as `its-router` wires it, around a writer whose flush raises
after its first successful write: the crash-only test runs this as a subprocess."""

from __future__ import annotations

import functools
import sys

from its_common.runtime import service_cli
from its_router import __version__
from its_router.app import main
from its_router.config import RouterSettings
from its_router.writer import StreamWriter


class FaultyWriter(StreamWriter):
    async def flush(self) -> bool:
        if self.written_events > 0:
            raise RuntimeError("injected writer fault")
        return await super().flush()


if __name__ == "__main__":
    router_main = functools.partial(main, writer_cls=FaultyWriter)
    sys.exit(service_cli("faulty-router", "test", RouterSettings, router_main, version=__version__))
