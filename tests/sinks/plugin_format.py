"""A format of a user's own package, registered through its entry points (``audiomill.formats``): tab-separated
lines of key and record, the records' JSON sorted by key."""

from __future__ import annotations

import json
import os


class TsvFormat:
    name = "tsv"
    extension = "tsv"
    needs = ""

    def write(self, path, records, fields, schema) -> None:
        with open(path, "w", encoding="utf-8") as handle:
            for record in records:
                handle.write(f"{record['key']}\t{json.dumps(record, sort_keys=True)}\n")
            handle.flush()
            os.fsync(handle.fileno())

    def read(self, path, fields):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                yield json.loads(line.split("\t", 1)[1])


FORMATS = {"tsv": TsvFormat()}
