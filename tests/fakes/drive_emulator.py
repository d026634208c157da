"""The Google Drive v3 emulator. It lives in the dev kit because the offline demo backs up
to it too."""

from devkit.drive_emulator import DriveEmulator, FileInfo, SessionInfo

__all__ = ["DriveEmulator", "FileInfo", "SessionInfo"]
