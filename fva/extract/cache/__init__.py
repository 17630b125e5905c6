"""Feature caches: sharded, resumable HDF5 tables of embeddings keyed by (manifest key, frame).

One cache is one folder per dataset/split/encoder holding one file per worker shard,
``shard-00003-of-00008.h5``. Every file (a committed part or a final shard) has the same layout, ``keys``,
``frames``, ``embeddings``, ``extras/<name>``, ``failed/keys`` and ``failed/reasons`` (shapes and dtypes in
:mod:`fva.extract.cache.format`, which owns the format), plus attributes that make it self-describing
(encoder, weights_id, dim, dtype, fva_version, ...). A record yields one row, or several for a face track
(one per sampled frame); a failed record yields no row and one ``failed`` entry, so it commits atomically
with the rows around it.

Writing is crash-safe: :class:`ShardWriter` commits its buffer as numbered part files beside the shard
(``shard-00003-of-00008.part-000012.h5``), each written under a temporary name (``.<name>.<pid>.tmp``, see
:mod:`fva.atomic`), fsynced and renamed, so a part either exists whole or not at all. A run killed at any
point and run again skips the keys already in committed parts (:meth:`ShardWriter.done_keys`), deletes its
shard's temporary garbage, and :meth:`ShardWriter.finalize` streams the parts in order into the shard file
(again temp name + rename) and then deletes them. Readers only ever look at final shard files, so leftover
parts (a kill between that rename and the deletes) are never read twice; the next writer removes them.

Reading: :func:`open_cache` joins a folder's complete shards into one :class:`CacheTable` whose keys, frames
and extras are in memory and whose embeddings stay on disk until asked for (:meth:`CacheTable.rows`,
:meth:`CacheTable.iter_chunks`, :meth:`CacheTable.load`). :func:`validate_cache` lists every problem of a
cache, optionally against its manifest; :func:`cache_info` summarises one.

Modules: :mod:`~fva.extract.cache.format` (the layout, names, attribute codec and the one shard checker),
:mod:`~fva.extract.cache.writer`, :mod:`~fva.extract.cache.reader`, :mod:`~fva.extract.cache.info`,
:mod:`~fva.extract.cache.validate`, and :mod:`~fva.extract.cache.memory` (the writer and table interfaces,
``RowSink`` and ``EncoderRows``, with their in-memory implementations, which the Python API uses).
"""

from fva.extract import COMMIT_ROWS
from fva.extract.cache.format import (CACHE_FORMAT, DTYPES, MUST_AGREE, NO_FRAME, PER_FILE_ATTRS,
                                      RESUME_MUST_AGREE, VALIDATE_AGREE, WRITER_ATTRS, row_frame, shard_name)
from fva.extract.cache.info import cache_info
from fva.extract.cache.reader import CacheTable, group_rows_by_key, open_cache
from fva.extract.cache.validate import validate_cache
from fva.extract.cache.writer import ShardWriter

__all__ = ["CACHE_FORMAT", "COMMIT_ROWS", "DTYPES", "MUST_AGREE", "NO_FRAME", "PER_FILE_ATTRS", "RESUME_MUST_AGREE",
           "VALIDATE_AGREE", "WRITER_ATTRS", "CacheTable", "ShardWriter", "cache_info", "group_rows_by_key",
           "open_cache", "row_frame", "shard_name", "validate_cache"]
