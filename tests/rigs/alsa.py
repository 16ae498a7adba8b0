"""The ALSA test rig: file-backed PCMs (see :mod:`gateway.audio.alsa_file`) behind ``ALSA_CONFIG_PATH``.

Import the ``alsa_rig`` fixture into ``conftest.py`` (``from tests.rigs.alsa import alsa_rig``).  It
defines the PCMs in :data:`PCM_NAMES`, each with its own raw S16_LE ``infile`` (what capture reads:
write it before the device opens, or delete it to make opening fail) and ``outfile`` (what playback
wrote: read it after the device is stopped).  :data:`UNDEFINED_PCM` is a name the config never
defines, for tests of a device that cannot be opened.

When libasound reads its configuration (checked with alsa-lib 1.2.8 and pyalsaaudio 0.11): not at
``import alsaaudio``, but at the first ``snd_pcm_open`` (or ``alsaaudio.pcms()``).  It then caches
it, but every later open re-reads ``ALSA_CONFIG_PATH`` and reloads when the list of files or their
(device, inode, mtime in whole seconds) changed.  So setting the variable in the fixture is enough
even if something opened a PCM earlier, and a test needing another config can point the variable at a
*new* file; rewriting the same file in place within the same second is not noticed.  The config
replaces ``alsa.conf`` entirely: ``default`` and ``hw:`` don't exist while the rig is active.

The rig is created once per process and shared: importing the fixture into several modules (or into
``conftest.py`` and a test module) yields the same PCMs and files, never two configs fighting.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from gateway.audio.alsa_file import FilePcm, file_pcm_config, read_raw, write_raw
from gateway.audio.bridge import Frame

PCM_NAMES = ("gw_a", "gw_b", "gw_c", "gw_d")
"""The file PCMs the rig defines."""

UNDEFINED_PCM = "gw_undefined"
"""A PCM name the rig's config does not define: opening it always fails."""


class AlsaRig:
    """A directory of file PCMs and the ALSA config that defines them."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.names = PCM_NAMES
        self.config_path = directory / "asound.conf"
        pcms = {name: FilePcm(str(self.infile(name)), str(self.outfile(name))) for name in PCM_NAMES}
        self.config_path.write_text(file_pcm_config(pcms))

    def infile(self, name: str) -> Path:
        """Raw S16_LE file the PCM's capture reads (must exist when it is opened)."""
        return self.directory / f"{self._known(name)}.in.raw"

    def outfile(self, name: str) -> Path:
        """Raw S16_LE file the PCM's playback writes (truncated when it is opened)."""
        return self.directory / f"{self._known(name)}.out.raw"

    def write_capture(self, name: str, samples: Frame, pad_s: float = 0.0, rate_hz: int = 16000) -> None:
        """Make the PCM's capture read ``samples`` then ``pad_s`` of silence (pad past the run's end)."""
        # Reads past the infile's end return stale data, not silence.
        pad = np.zeros(int(pad_s * rate_hz), dtype=np.int16)
        write_raw(self.infile(name), np.concatenate([np.asarray(samples, dtype=np.int16), pad]))

    def read_playback(self, name: str) -> Frame:
        """What the PCM's playback wrote (complete once the device is stopped)."""
        return read_raw(self.outfile(name))

    def reset(self, name: str) -> None:
        """Remove the PCM's infile and outfile (whatever they are: files, FIFOs, directories)."""
        for path in (self.infile(name), self.outfile(name)):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def _known(self, name: str) -> str:
        if name not in PCM_NAMES:
            raise KeyError(f"{name!r} is not one of the rig's PCMs {PCM_NAMES}")
        return name


_rig: AlsaRig | None = None
_users = 0


@pytest.fixture(scope="session")
def alsa_rig() -> Iterator[AlsaRig]:
    """The session's file PCMs, with ``ALSA_CONFIG_PATH`` pointing at them until the session ends."""
    global _rig, _users
    if _rig is None:
        # mkdtemp, not a pytest tmp dir: one rig per process, shared by every importer of the fixture.
        _rig = AlsaRig(Path(tempfile.mkdtemp(prefix="gateway-alsa-rig-")))
    _users += 1
    saved = os.environ.get("ALSA_CONFIG_PATH")
    os.environ["ALSA_CONFIG_PATH"] = str(_rig.config_path)
    try:
        yield _rig
    finally:
        if saved is None:
            os.environ.pop("ALSA_CONFIG_PATH", None)
        else:
            os.environ["ALSA_CONFIG_PATH"] = saved
        _users -= 1
        if _users == 0:
            shutil.rmtree(_rig.directory, ignore_errors=True)
            _rig = None
