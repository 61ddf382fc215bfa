/*
 * Tests of the change-feed extension (change-feed.js) through the server's REST interface, as the
 * Cosmos SDKs call it. Run: `npm test` in tests/cosmos_server (node's built-in test runner).
 */
"use strict";

const { test, before, after } = require("node:test");
const assert = require("node:assert/strict");
const https = require("node:https");
const { startServer } = require("../server");

let server;
let baseUrl;
const agent = new https.Agent({ keepAlive: true, rejectUnauthorized: false });

function request(method, path, { headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = https.request(`${baseUrl}${path}`, {
      method,
      agent,
      headers: { ...(payload ? { "content-type": "application/json" } : {}), ...headers },
    }, res => {
      const chunks = [];
      res.on("data", c => chunks.push(c));
      res.on("end", () => {
        const text = Buffer.concat(chunks).toString();
        resolve({ status: res.statusCode, headers: res.headers, body: text ? JSON.parse(text) : null });
      });
    });
    req.on("error", reject);
    if (payload) req.write(payload);
    req.end();
  });
}

let collectionCounter = 0;

async function newCollection() {
  collectionCounter += 1;
  const coll = `events${collectionCounter}`;
  const res = await request("POST", "/dbs/testdb/colls", {
    body: { id: coll, partitionKey: { paths: ["/streamId"], kind: "Hash" } },
  });
  assert.equal(res.status, 201);
  return `/dbs/testdb/colls/${coll}`;
}

async function create(coll, doc) {
  const res = await request("POST", `${coll}/docs`, {
    headers: { "x-ms-documentdb-partitionkey": JSON.stringify([doc.streamId]) },
    body: doc,
  });
  assert.equal(res.status, 201);
  return res.body;
}

function feed(coll, headers = {}) {
  return request("GET", `${coll}/docs`, {
    headers: { "a-im": "Incremental feed", "x-ms-documentdb-partitionkeyrangeid": "0", ...headers },
  });
}

before(async () => {
  ({ server, url: baseUrl } = await startServer({ port: 0 }));
  const res = await request("POST", "/dbs", { body: { id: "testdb" } });
  assert.equal(res.status, 201);
});

after(() => {
  agent.destroy();
  server.close();
  server.closeAllConnections();
});

test("every write stamps the next _lsn of its container", async () => {
  const coll = await newCollection();
  const a = await create(coll, { id: "1", streamId: "s" });
  const b = await create(coll, { id: "2", streamId: "t" });
  assert.equal(a._lsn, 1);
  assert.equal(b._lsn, 2);
});

test("reading from the beginning returns all documents in LSN order with the last LSN as etag", async () => {
  const coll = await newCollection();
  for (const [id, streamId] of [["1", "s"], ["2", "t"], ["3", "s"]]) await create(coll, { id, streamId });
  const res = await feed(coll);
  assert.equal(res.status, 200);
  assert.deepEqual(res.body.Documents.map(d => d.id), ["1", "2", "3"]);
  assert.equal(res.headers.etag, '"3"');
  assert.equal(res.headers["x-ms-item-count"], "3");
});

test("If-None-Match returns only later changes, then 304 with the same etag when nothing is new", async () => {
  const coll = await newCollection();
  await create(coll, { id: "1", streamId: "s" });
  const first = await feed(coll);
  await create(coll, { id: "2", streamId: "s" });
  const second = await feed(coll, { "if-none-match": first.headers.etag });
  assert.equal(second.status, 200);
  assert.deepEqual(second.body.Documents.map(d => d.id), ["2"]);
  const third = await feed(coll, { "if-none-match": second.headers.etag });
  assert.equal(third.status, 304);
  assert.equal(third.headers.etag, second.headers.etag);
  await create(coll, { id: "3", streamId: "s" });
  const fourth = await feed(coll, { "if-none-match": third.headers.etag });
  assert.deepEqual(fourth.body.Documents.map(d => d.id), ["3"]);
});

test("x-ms-max-item-count pages the feed without gaps or repeats", async () => {
  const coll = await newCollection();
  for (let i = 1; i <= 5; i += 1) await create(coll, { id: String(i), streamId: `s${i % 2}` });
  const seen = [];
  let etag;
  for (;;) {
    const res = await feed(coll, { "x-ms-max-item-count": "2", ...(etag ? { "if-none-match": etag } : {}) });
    if (res.status === 304) break;
    assert.ok(res.body.Documents.length <= 2);
    seen.push(...res.body.Documents.map(d => d.id));
    etag = res.headers.etag;
  }
  assert.deepEqual(seen, ["1", "2", "3", "4", "5"]);
});

test("If-None-Match: * starts from now", async () => {
  const coll = await newCollection();
  await create(coll, { id: "old", streamId: "s" });
  const now = await feed(coll, { "if-none-match": "*" });
  assert.equal(now.status, 304);
  await create(coll, { id: "new", streamId: "s" });
  const res = await feed(coll, { "if-none-match": now.headers.etag });
  assert.deepEqual(res.body.Documents.map(d => d.id), ["new"]);
});

test("a replaced document appears once, at its latest version", async () => {
  const coll = await newCollection();
  await create(coll, { id: "snap", streamId: "s", v: 1 });
  await create(coll, { id: "c1", streamId: "s" });
  const replaced = await request("PUT", `${coll}/docs/snap`, {
    headers: { "x-ms-documentdb-partitionkey": JSON.stringify(["s"]) },
    body: { id: "snap", streamId: "s", v: 2 },
  });
  assert.equal(replaced.status, 200);
  const res = await feed(coll);
  assert.deepEqual(res.body.Documents.map(d => [d.id, d.v]), [["c1", undefined], ["snap", 2]]);
});

test("the partition key header restricts the feed to one logical partition", async () => {
  const coll = await newCollection();
  for (const [id, streamId] of [["1", "s"], ["2", "t"], ["3", "s"]]) await create(coll, { id, streamId });
  const res = await feed(coll, { "x-ms-documentdb-partitionkey": JSON.stringify(["s"]) });
  assert.deepEqual(res.body.Documents.map(d => d.id), ["1", "3"]);
});

test("an unknown partition key range is gone and an EPK sub-range is refused", async () => {
  const coll = await newCollection();
  const gone = await feed(coll, { "x-ms-documentdb-partitionkeyrangeid": "7" });
  assert.equal(gone.status, 410);
  assert.equal(gone.headers["x-ms-substatus"], "1002");
  const sub = await feed(coll, { "x-ms-start-epk": "", "x-ms-end-epk": "80" });
  assert.equal(sub.status, 400);
  const bad = await feed(coll, { "if-none-match": '"abc"' });
  assert.equal(bad.status, 400);
});

test("a point read of a missing document is 404, an existing one is still served by the stock server", async () => {
  const coll = await newCollection();
  await create(coll, { id: "here", streamId: "s" });
  const headers = { "x-ms-documentdb-partitionkey": JSON.stringify(["s"]) };
  const missing = await request("GET", `${coll}/docs/nothere`, { headers });
  assert.equal(missing.status, 404);
  assert.equal(missing.body.code, "NotFound");
  const present = await request("GET", `${coll}/docs/here`, { headers });
  assert.equal(present.status, 200);
  assert.equal(present.body.id, "here");
});

test("the server keeps connections alive", async () => {
  const coll = await newCollection();
  const res = await feed(coll);
  assert.equal(res.headers.connection, "keep-alive");
  const read = await request("GET", coll);
  assert.equal(read.headers.connection, "keep-alive");
});
