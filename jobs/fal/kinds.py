"""Which kind of media a file found in a fal payload is, from what the payload says.

The file's extension decides first (it names the actual file), then the key names around
it, then ``content_type``, which comes last because fal sends ``application/octet-stream``
for real videos.
"""

from __future__ import annotations

import re
from enum import StrEnum


class MediaKind(StrEnum):
    VIDEO = "video"
    IMAGE = "image"
    AUDIO = "audio"
    MODEL = "model"  # 3D meshes (.glb etc.), not ML weights
    OTHER = "other"


MAX_KEY_CHARS = 64  # hostile keys are cut: only this much of a key is read or shown
_TOKEN_RE = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|[0-9]+[a-z]*")

_EXTENSION_KINDS: dict[str, MediaKind] = {
    **dict.fromkeys(("mp4", "mov", "webm", "mkv", "avi", "m4v", "mpg", "mpeg"), MediaKind.VIDEO),
    **dict.fromkeys(
        ("png", "jpg", "jpeg", "webp", "gif", "bmp", "tif", "tiff", "avif", "heic", "svg"),
        MediaKind.IMAGE,
    ),
    **dict.fromkeys(("mp3", "wav", "flac", "ogg", "oga", "m4a", "aac", "opus"), MediaKind.AUDIO),
    **dict.fromkeys(("glb", "gltf", "obj", "fbx", "usdz", "stl", "ply"), MediaKind.MODEL),
    # Known non-media: decide here rather than let a key name like "video_config" guess.
    **dict.fromkeys(("safetensors", "ckpt", "pt", "json", "yaml", "txt", "zip"), MediaKind.OTHER),
}
_TOKEN_KINDS: dict[str, MediaKind] = {
    **dict.fromkeys(("video", "videos", "vid", "clip", "clips"), MediaKind.VIDEO),
    **dict.fromkeys(
        ("image", "images", "img", "imgs", "thumbnail", "thumb", "texture", "textures", "mask")
        + ("masks", "picture", "photo", "frame", "frames"),
        MediaKind.IMAGE,
    ),
    **dict.fromkeys(("audio", "audios", "sound", "music", "speech", "voice"), MediaKind.AUDIO),
    **dict.fromkeys(("model", "mesh", "meshes", "glb", "gltf", "obj", "fbx", "usdz"), MediaKind.MODEL),
}
_CONTENT_TYPE_KINDS = {
    "video": MediaKind.VIDEO,
    "image": MediaKind.IMAGE,
    "audio": MediaKind.AUDIO,
    "model": MediaKind.MODEL,
}


def infer_kind(keys: tuple[str, ...], extension: str | None, content_type: str | None) -> MediaKind:
    """``keys``: the nearest key names above the file, innermost last."""
    if extension in _EXTENSION_KINDS:
        return _EXTENSION_KINDS[extension]
    for key in reversed(keys):
        kind = _key_kind(key)
        if kind is not None:
            return kind
    if content_type:
        major = content_type.split("/", 1)[0].strip().lower()
        return _CONTENT_TYPE_KINDS.get(major, MediaKind.OTHER)
    return MediaKind.OTHER


def _key_kind(key: str) -> MediaKind | None:
    # The head noun comes last in English keys ("video_thumbnail" is an image), so scan
    # tokens from the end.
    for token in reversed(_TOKEN_RE.findall(key[:MAX_KEY_CHARS])):
        kind = _TOKEN_KINDS.get(token.lower())
        if kind is not None:
            return kind
    return None


def known_extension(*names: str | None) -> str | None:
    """The first extension among ``names`` (file name, URL path) that names a kind."""
    for name in names:
        last = (name or "").rsplit("/", 1)[-1]
        ext = last.rsplit(".", 1)[-1].lower() if "." in last else ""
        if ext in _EXTENSION_KINDS:
            return ext
    return None
