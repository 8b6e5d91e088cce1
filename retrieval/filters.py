"""Which payload field a query's filter key names; the stores take the paths it gives.

A chunk's payload holds covrag's own fields (``PAYLOAD_FIELDS``) beside the document's
``metadata`` as it was ingested. A key among ``PAYLOAD_FIELDS`` or starting with ``metadata.``
is a payload path as it stands; any other key is a metadata key, so ``{"department": "IT"}``
matches documents ingested with ``metadata: {"department": "IT"}`` (a dotted key reaches into
nested metadata). A metadata key that shares a name with a payload field is named in full:
``metadata.title``.
"""

from __future__ import annotations

#: covrag's own payload fields a filter key names as they stand; ``text`` and the offsets are
#: left out, a filter on them being no use.
PAYLOAD_FIELDS = ("doc_id", "title", "source", "chunk_index")
METADATA = "metadata"


def payload_key(key: str) -> str:
    """The payload path a filter key matches: ``department`` → ``metadata.department``."""
    if key in PAYLOAD_FIELDS or key.startswith(f"{METADATA}."):
        return key
    return f"{METADATA}.{key}"
