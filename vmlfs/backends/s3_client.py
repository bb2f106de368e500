"""The one home of boto3 and botocore: an S3 bucket reduced to the few calls a store needs.

Endpoint, region and credentials are found the way every AWS tool finds them
(``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``,
``AWS_PROFILE`` with ``~/.aws/config`` and ``~/.aws/credentials``,
``AWS_ENDPOINT_URL``); only a non-AWS endpoint may be given explicitly
(``--s3-endpoint``), because an endpoint is no secret. Credentials never pass
through vmlfs's own code, so they cannot end up in argv, a log line or an
error message: errors are rebuilt here from the S3 error code and the key.

Every call is retried by botocore's "standard" mode (5xx, throttling such as
SlowDown, timeouts, dropped connections) a bounded number of times with
exponential backoff and jitter; what still fails becomes an ``OSError`` with
an errno (the store primitives' contract) — ``FileNotFoundError`` for a
missing key, ``FileExistsError`` when a condition (``If-None-Match: *``,
``If-Match``) does not hold — or :class:`ConnectionFailed` when the server
cannot be reached or keeps failing.
"""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import botocore.config
import botocore.exceptions
import botocore.session

from vmlfs.errors import ConnectionFailed, NotFound, PermissionDenied

#: Attempts per call (the first one included) before an error is final.
MAX_ATTEMPTS = int(os.environ.get("VMLFS_S3_MAX_ATTEMPTS", "5"))
#: boto3's upload_file switches to a multipart upload above this size (parts of this size, 4 in parallel):
#: the settings of its TransferConfig.
MULTIPART = {"multipart_threshold": 64 << 20, "multipart_chunksize": 64 << 20, "max_concurrency": 4}
_MISSING = {"NoSuchKey", "NoSuchUpload", "404", "NotFound"}
_CONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_DENIED = {"AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"}


class ConditionFailed(FileExistsError):
    """A conditional write or delete was refused: the key exists (If-None-Match) or changed (If-Match)."""


class S3Bucket:
    """Keys of one bucket; ``where`` (``s3://bucket``) names it in messages."""

    def __init__(self, bucket: str, *, endpoint: str | None = None, profile: str | None = None) -> None:
        self.bucket = bucket
        self.where = f"s3://{bucket}"
        # botocore's session, not boto3's: importing boto3 imports s3transfer (85 ms), which only the
        # managed uploads and copies need (_managed imports them then; a no-change backup makes none).
        session = botocore.session.Session(profile=profile)
        try:
            session.get_scoped_config()  # a profile that does not exist is refused here, as boto3 does
            region = session.get_config_variable("region") or "us-east-1"
        except botocore.exceptions.ProfileNotFound as exc:
            raise NotFound(f"no AWS profile {exc.kwargs.get('profile')!r}", hint="see ~/.aws/config") from None
        custom = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": MAX_ATTEMPTS},
            connect_timeout=10, read_timeout=60,
            # A server other than AWS is reached by path (http://host/bucket/key): its host name
            # rarely resolves with the bucket in front; AWS itself chooses as it prefers.
            s3={"addressing_style": "path" if custom else "auto"},
            # Checksums only when the operation needs one: not every S3 server knows the new headers.
            request_checksum_calculation="when_required", response_checksum_validation="when_required",
        )
        self.endpoint = custom
        self.client = session.create_client("s3", endpoint_url=endpoint, region_name=region, config=config)

    # errors -------------------------------------------------------------------------------

    def _error(self, exc: Exception, key: str) -> Exception:
        """The error a store can act on, with no part of the request (headers, signature) in it."""
        if isinstance(exc, botocore.exceptions.ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            name = f"{self.where}/{key}"
            if code == "NoSuchBucket":
                return NotFound(f"no bucket {self.bucket!r} at {self.endpoint or 'AWS'}", hint="create it first")
            if code in _MISSING or status == 404:
                return FileNotFoundError(errno.ENOENT, "no such key", name)
            if code in _CONDITION or status in (409, 412):
                return ConditionFailed(errno.EEXIST, "a condition did not hold (the key exists or changed)", name)
            if code in _DENIED or status == 403:
                return PermissionDenied(f"{name}: access denied ({code})",
                                        hint="check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the bucket policy")
            return ConnectionFailed(f"{name}: the S3 server answered {status} {code} after {MAX_ATTEMPTS} attempts")
        if isinstance(exc, botocore.exceptions.NoCredentialsError):
            return PermissionDenied(f"{self.where}: no S3 credentials found",
                                    hint="set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE with ~/.aws/credentials")
        if isinstance(exc, botocore.exceptions.BotoCoreError):
            return ConnectionFailed(f"{self.where}/{key}: the S3 server cannot be reached ({type(exc).__name__}, "
                                    f"{MAX_ATTEMPTS} attempts)", hint=f"endpoint {self.endpoint or 'AWS'}")
        return exc

    def _call(self, method: str, key: str, **kwargs):
        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=key, **kwargs)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, key) from None

    # calls --------------------------------------------------------------------------------

    def get(self, key: str, start: int | None = None, length: int | None = None) -> bytes:
        """The object, or ``length`` bytes of it from ``start`` (one ranged GET)."""
        kwargs = {} if start is None else {"Range": f"bytes={start}-{start + (length or 1) - 1}"}
        return self._body(self._call("get_object", key, **kwargs), key)

    def tail(self, key: str, length: int) -> tuple[bytes, int]:
        """(the object's last ``length`` bytes or all of a smaller one, its size) from one ranged GET:
        the answer's Content-Range gives the size, so no HEAD is needed first."""
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=-{length}")
        except botocore.exceptions.ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 416:
                return b"", 0  # an empty object has no last bytes
            raise self._error(exc, key) from None
        except botocore.exceptions.BotoCoreError as exc:
            raise self._error(exc, key) from None
        span = answer.get("ContentRange")  # absent if the server sent the whole object
        return self._body(answer, key), int(span.rpartition("/")[2]) if span else answer["ContentLength"]

    def get_tagged(self, key: str) -> tuple[bytes, str]:
        """The object and its ETag, from one GET (what a later ``If-Match`` refers to)."""
        answer = self._call("get_object", key)
        return self._body(answer, key), answer["ETag"]

    def _body(self, answer: dict, key: str) -> bytes:
        try:
            return answer["Body"].read()
        except (botocore.exceptions.BotoCoreError, OSError) as exc:  # the connection died mid-body
            raise ConnectionFailed(f"{self.where}/{key}: the download broke off ({type(exc).__name__})") from None

    def _chunks(self, key: str):
        """The object's bytes in pieces of 1 MiB, from one GET (never whole in memory)."""
        chunks = self._call("get_object", key)["Body"].iter_chunks(1 << 20)
        while True:
            try:
                chunk = next(chunks, None)
            except (botocore.exceptions.BotoCoreError, OSError) as exc:
                raise ConnectionFailed(f"{self.where}/{key}: the download broke off ({type(exc).__name__})") from None
            if chunk is None:
                return
            yield chunk

    def download(self, key: str, local: str) -> None:
        """The object into the file ``local`` by one streamed GET (a transfer manager would ask for
        its size first: one more round trip, for the small objects trees are)."""
        with open(local, "wb") as f:
            for chunk in self._chunks(key):
                f.write(chunk)

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        """One PUT (readers see the old or the new object, never half); its ETag."""
        kwargs: dict = {}
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        return self._call("put_object", key, Body=data, **kwargs)["ETag"]

    def upload(self, local: Path, key: str) -> None:
        """A local file as one object: multipart above :data:`MULTIPART`'s threshold. The object
        appears only when the upload completes; an interrupted one leaves no key (a multipart one
        leaves its parts, which gc aborts: :meth:`uploads`)."""
        upload_file, _, config, S3UploadFailedError = _managed()
        try:
            upload_file(self.client, str(local), self.bucket, key, Config=config)
        except S3UploadFailedError as exc:
            raise ConnectionFailed(f"{self.where}/{key}: the upload failed ({str(exc).split(':')[0]})") from None
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, key) from None

    def head(self, key: str) -> tuple[int, str]:
        """(size, ETag); FileNotFoundError if there is no such key."""
        answer = self._call("head_object", key)
        return answer["ContentLength"], answer["ETag"]

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        self._call("delete_object", key, **({"IfMatch": if_match} if if_match else {}))

    def copy(self, key: str, new_key: str, size: int) -> None:
        """A server-side copy that never replaces ``new_key`` (FileExistsError if it exists); above
        5 GiB, S3's limit for one copy, a multipart copy, unconditional (callers pick fresh names)."""
        source = {"Bucket": self.bucket, "Key": key}
        if size < 5 << 30:
            self._call("copy_object", new_key, CopySource=source, IfNoneMatch="*")
            return
        _, copy, config, _ = _managed()
        try:
            copy(self.client, source, self.bucket, new_key, Config=config)
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, key) from None

    def digest(self, key: str) -> tuple[int, str]:
        """(size, sha256 hex) of an object, streamed (never whole in memory)."""
        h, size = hashlib.sha256(), 0
        for chunk in self._chunks(key):
            h.update(chunk)
            size += len(chunk)
        return size, h.hexdigest()

    def listing(self, prefix: str, *, delimiter: str | None = "/") -> tuple[list[tuple[str, int]], list[str]]:
        """(keys with their sizes, common prefixes) under ``prefix``, every page."""
        keys, prefixes = [], []
        kwargs = {"Bucket": self.bucket, "Prefix": prefix, **({"Delimiter": delimiter} if delimiter else {})}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                keys += [(c["Key"], c["Size"]) for c in page.get("Contents", [])]
                prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, prefix) from None
        return keys, prefixes

    def uploads(self, prefix: str) -> list[tuple[str, str, float]]:
        """(key, upload id, when it was started, unix time) of every multipart upload under
        ``prefix`` not yet completed or aborted: an interrupted one is invisible to a listing of
        keys but keeps its parts (and their space) until it is aborted."""
        found = []
        try:
            for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix):
                found += [(u["Key"], u["UploadId"], u["Initiated"].timestamp()) for u in page.get("Uploads", [])]
        except (botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as exc:
            raise self._error(exc, prefix) from None
        return found

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort a multipart upload: its parts are deleted; one already gone is no error."""
        try:
            self._call("abort_multipart_upload", key, UploadId=upload_id)
        except FileNotFoundError:  # NoSuchUpload: completed or aborted meanwhile
            pass



def _managed():
    """boto3's managed transfers (multipart, in parallel), its error and the MULTIPART config: boto3
    and s3transfer are imported only when a large object may be uploaded or copied (see S3Bucket)."""
    from boto3.exceptions import S3UploadFailedError
    from boto3.s3.inject import copy, upload_file
    from boto3.s3.transfer import TransferConfig

    return upload_file, copy, TransferConfig(**MULTIPART), S3UploadFailedError
