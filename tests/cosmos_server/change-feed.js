/*
 * Test-only extension of @vercel/cosmosdb-server: the parts of Cosmos DB (NoSQL API) behaviour that
 * meter-gateway needs and the stock server lacks. Nothing in the product depends on this file; the
 * product talks to it through the official azure-cosmos SDK exactly as it talks to Azure.
 *
 * 1. Change feed, "LatestVersion" mode, as documented for the REST API
 *    (https://learn.microsoft.com/rest/api/cosmos-db/list-documents , "Change feed"):
 *    - every write (create, replace, upsert) of a document stamps it with the next logical sequence
 *      number `_lsn` of its container (one physical partition here, so one LSN sequence);
 *    - GET .../docs with `A-IM: Incremental feed` reads the feed: no `If-None-Match` = from the
 *      beginning; `If-None-Match: "<lsn>"` = the changes after that LSN; `If-None-Match: *` = from now;
 *      `If-Modified-Since` = documents written at or after that time;
 *    - answers 200 with the documents in LSN order (at most `x-ms-max-item-count`) and
 *      `etag: "<lsn of the last document returned>"` (the continuation), or 304 Not Modified with the
 *      etag to continue from when there is nothing new;
 *    - a replaced document shows once, at its latest version (deletes are not in this mode's feed);
 *    - `x-ms-documentdb-partitionkey` restricts the feed to one logical partition;
 *    - the container has one physical partition (pkrange "0" = the whole EPK range ""-"FF"): another
 *      pkrange id answers 410/1002 (range gone), an EPK sub-range answers 400 (not implemented here).
 * 2. A point read of a missing document answers 404 NotFound (the stock server answers 500).
 */
"use strict";

const { randomUUID } = require("crypto");
const { URL } = require("url");
const Documents = require("@vercel/cosmosdb-server/lib/account/documents").default;
const { parsePartitionKey } = require("@vercel/cosmosdb-server/lib/utils/get-partition-from-header");

const FULL_RANGE_MIN = "";
const FULL_RANGE_MAX = "FF";

let installed = false;

/** Stamp `_lsn` on every document write. Idempotent; patches the Documents class once per process. */
function installLsnStamping() {
  if (installed) return;
  installed = true;
  const originalSet = Documents.prototype._set;
  Documents.prototype._set = function setWithLsn(data) {
    this._lastLsn = (this._lastLsn || 0) + 1;
    return originalSet.call(this, { ...data, _lsn: this._lastLsn });
  };
}

function header(req, name) {
  const value = req.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

function send(req, res, status, body, extraHeaders = {}) {
  res.statusCode = status;
  res.setHeader("content-type", "application/json");
  res.setHeader("connection", "keep-alive");
  res.setHeader("x-ms-activity-id", randomUUID());
  res.setHeader("x-ms-request-charge", "1");
  res.setHeader("content-location", `https://${req.headers.host}${req.url}`);
  for (const [name, value] of Object.entries(extraHeaders)) res.setHeader(name, value);
  res.end(status === 304 ? "" : JSON.stringify(body));
}

function docsPath(req) {
  const { pathname } = new URL(req.url, "https://localhost");
  const match = /^\/+dbs\/([^/]+)\/colls\/([^/]+)\/docs(?:\/([^/]+))?\/*$/.exec(pathname);
  if (!match) return null;
  return {
    dbId: decodeURIComponent(match[1]),
    collId: decodeURIComponent(match[2]),
    docId: match[3] === undefined ? undefined : decodeURIComponent(match[3]),
  };
}

function partitionValue(collection, doc) {
  const paths = ((collection.read() || {}).partitionKey || {}).paths || ["/id"];
  let value = doc;
  for (const key of paths[0].slice(1).split("/")) value = value == null ? undefined : value[key];
  return value;
}

function quoted(lsn) {
  return `"${lsn}"`;
}

function readChangeFeed(account, req, res, { dbId, collId }) {
  const aim = header(req, "a-im");
  if (aim.toLowerCase() !== "incremental feed") {
    return send(req, res, 400, { code: "BadRequest", message: `A-IM ${aim} is not supported by the test server` });
  }
  const collection = account.database(dbId).collection(collId);
  if (!collection.read()) {
    return send(req, res, 404, { code: "NotFound", message: "Resource Not Found" });
  }
  const pkRange = header(req, "x-ms-documentdb-partitionkeyrangeid");
  if (pkRange !== undefined && pkRange !== "0") {
    return send(req, res, 410, { code: "Gone", message: `partition key range ${pkRange} is gone` }, {
      "x-ms-substatus": "1002",
    });
  }
  const startEpk = header(req, "x-ms-start-epk");
  const endEpk = header(req, "x-ms-end-epk");
  if ((startEpk !== undefined && startEpk !== FULL_RANGE_MIN) || (endEpk !== undefined && endEpk !== FULL_RANGE_MAX)) {
    return send(req, res, 400, {
      code: "BadRequest",
      message: "change feed over an effective-partition-key sub-range is not implemented by the test server",
    });
  }

  const documents = collection.documents;
  const current = documents._lastLsn || 0;
  const ifNoneMatch = header(req, "if-none-match");
  const ifModifiedSince = header(req, "if-modified-since");
  let after = 0;
  let notBefore = null;
  if (ifNoneMatch === "*") {
    return send(req, res, 304, null, { etag: quoted(current) });
  } else if (ifNoneMatch !== undefined) {
    after = Number.parseInt(ifNoneMatch.replace(/"/g, ""), 10);
    if (!Number.isSafeInteger(after) || after < 0) {
      return send(req, res, 400, { code: "BadRequest", message: `invalid change feed continuation ${ifNoneMatch}` });
    }
  } else if (ifModifiedSince !== undefined) {
    const millis = Date.parse(ifModifiedSince);
    if (Number.isNaN(millis)) {
      return send(req, res, 400, { code: "BadRequest", message: `invalid If-Modified-Since ${ifModifiedSince}` });
    }
    notBefore = Math.floor(millis / 1000);
  }

  let partitionFilter;
  const partitionHeader = header(req, "x-ms-documentdb-partitionkey");
  if (partitionHeader !== undefined) {
    const parsed = JSON.parse(partitionHeader);
    partitionFilter = Array.isArray(parsed) ? parsed[0] : parsed;
    // Keep parsing consistent with the stock server's point operations.
    parsePartitionKey(partitionHeader, undefined);
  }

  let docs = [...documents._data.values()]
    .map(item => item.read())
    .filter(doc => doc._lsn > after)
    .filter(doc => notBefore === null || doc._ts >= notBefore)
    .filter(doc => partitionFilter === undefined || partitionValue(collection, doc) === partitionFilter)
    .sort((a, b) => a._lsn - b._lsn);
  const maxItemCount = Number.parseInt(header(req, "x-ms-max-item-count") || "-1", 10);
  if (maxItemCount > 0) docs = docs.slice(0, maxItemCount);

  if (docs.length === 0) {
    return send(req, res, 304, null, { etag: quoted(Math.max(after, current)) });
  }
  const last = docs[docs.length - 1]._lsn;
  return send(req, res, 200, { _rid: collection.read()._rid, Documents: docs, _count: docs.length }, {
    etag: quoted(last),
    lsn: String(current),
    "x-ms-item-count": String(docs.length),
  });
}

function readMissingDocument(account, req, res, { dbId, collId, docId }) {
  const collection = account.database(dbId).collection(collId);
  if (!collection.read()) return false;
  const partitionHeader = header(req, "x-ms-documentdb-partitionkey");
  let partition;
  try {
    partition = partitionHeader === undefined ? docId : parsePartitionKey(partitionHeader, docId);
  } catch (err) {
    return false; // let the stock server report it
  }
  if (collection.document(docId, partition).read()) return false;
  send(req, res, 404, { code: "NotFound", message: "Entity with the specified id does not exist in the system." });
  return true;
}

/**
 * Handle the request if the extension covers it; return true when a response was sent, false to let
 * the stock server handle it.
 */
function handle(account, req, res) {
  if (req.method !== "GET" || !account) return false;
  const path = docsPath(req);
  if (!path) return false;
  if (path.docId === undefined) {
    if (header(req, "a-im") === undefined) return false;
    readChangeFeed(account, req, res, path);
    return true;
  }
  return readMissingDocument(account, req, res, path);
}

module.exports = { installLsnStamping, handle };
