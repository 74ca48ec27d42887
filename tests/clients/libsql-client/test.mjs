// Real-client test of the libsql-wal Hrana-over-HTTP server (`libsql-wal run`), driven by the npm
// package @libsql/client through its pure-JS `web` entry (Hrana 2 JSON over `POST /v2/pipeline`).
//
//   cd tests/clients/libsql-client && npm ci && node test.mjs
//
// Environment:
//   LIBSQL_URL              user API base URL            (default http://127.0.0.1:8080)
//   LIBSQL_ADMIN_URL        admin API base URL           (default http://127.0.0.1:9090)
//   LIBSQL_AUTH_TOKEN       optional, passed to createClient as `authToken`
//   LIBSQL_ADMIN_TOKEN      optional, sent as `Authorization: Bearer <t>` to the admin API
//   LIBSQL_TEST_TIMEOUT_MS  optional, timeout of each check and of each HTTP request (default 30000)
//   LIBSQL_REPLICA_URL      optional, a read replica of LIBSQL_URL following namespace `default`
//   LIBSQL_FORWARDING_REPLICA_URL  optional, another, run with --forward-writes
//
// It creates two fresh namespaces through the admin API (`POST /v1/namespaces/<ns>/create`), talks to
// each through its own client whose custom `fetch` adds `x-namespace: <ns>`, prints `ok - <name>` or
// `not ok - <name>` (plus `# ...` detail lines) per check, then `N passed, N failed`, and exits 0 only
// if every check passed.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createClient, LibsqlError, LibsqlBatchError } from "@libsql/client/web";

function env(name, fallback) {
    const v = process.env[name];
    return v === undefined || v === "" ? fallback : v;
}

const USER_URL = env("LIBSQL_URL", "http://127.0.0.1:8080");
const ADMIN_URL = env("LIBSQL_ADMIN_URL", "http://127.0.0.1:9090").replace(/\/+$/, "");
const AUTH_TOKEN = env("LIBSQL_AUTH_TOKEN", undefined);
const ADMIN_TOKEN = env("LIBSQL_ADMIN_TOKEN", undefined);
const TIMEOUT_MS = Number(env("LIBSQL_TEST_TIMEOUT_MS", "30000"));
const REPLICA_URL = env("LIBSQL_REPLICA_URL", undefined);
const FORWARDING_URL = env("LIBSQL_FORWARDING_REPLICA_URL", undefined);
if (!Number.isFinite(TIMEOUT_MS) || TIMEOUT_MS <= 0) {
    console.error(`LIBSQL_TEST_TIMEOUT_MS must be a positive number, got ${process.env.LIBSQL_TEST_TIMEOUT_MS}`);
    process.exit(2);
}

// Namespace names: lowercase letters, digits and '-' only, unique per run.
const nsA = `js-a-${randomBytes(4).toString("hex")}`;
const nsB = `js-b-${randomBytes(4).toString("hex")}`;

// ---------------------------------------------------------------------------------------------------
// Tiny check runner

let passed = 0;
let failed = 0;
const clients = [];

function note(line) {
    console.log(`# ${line}`);
}

function describeError(e, indent = "#   ") {
    const lines = [];
    let cur = e;
    let depth = 0;
    while (cur !== undefined && cur !== null && depth < 5) {
        if (cur instanceof Error) {
            let head = `${cur.name}: ${cur.message}`;
            if (cur.code !== undefined) head += ` [code=${JSON.stringify(cur.code)}]`;
            if (cur.statementIndex !== undefined) head += ` [statementIndex=${cur.statementIndex}]`;
            if (cur.status !== undefined) head += ` [status=${cur.status}]`;
            lines.push((depth === 0 ? "" : "caused by: ") + head);
            if (depth === 0 && cur.stack) {
                const frames = cur.stack.split("\n").filter((l) => l.trim().startsWith("at ")).slice(0, 4);
                for (const f of frames) lines.push("  " + f.trim());
            }
            cur = cur.cause;
        } else {
            lines.push((depth === 0 ? "thrown: " : "caused by: ") + String(cur));
            cur = undefined;
        }
        depth += 1;
    }
    return lines.map((l) => indent + l).join("\n");
}

async function check(name, fn) {
    let timer;
    try {
        await Promise.race([
            Promise.resolve().then(fn),
            new Promise((_, reject) => {
                timer = setTimeout(() => reject(new Error(`check timed out after ${TIMEOUT_MS} ms`)), TIMEOUT_MS);
            }),
        ]);
        passed += 1;
        console.log(`ok - ${name}`);
        return true;
    } catch (e) {
        failed += 1;
        console.log(`not ok - ${name}`);
        console.log(describeError(e));
        return false;
    } finally {
        clearTimeout(timer);
    }
}

// Awaits `p` and returns what it rejected with; fails if it resolved.
async function rejection(p) {
    let value;
    try {
        value = await (typeof p === "function" ? p() : p);
    } catch (e) {
        return e;
    }
    assert.fail(`expected a rejection, but the call resolved with ${inspectShort(value)}`);
}

function inspectShort(v) {
    try {
        return JSON.stringify(v, (_, x) => (typeof x === "bigint" ? `${x}n` : x)).slice(0, 300);
    } catch {
        return String(v);
    }
}

function assertLibsqlError(err) {
    assert.ok(err instanceof LibsqlError, `expected a LibsqlError, got ${err?.name}: ${err?.message}`);
    assert.equal(typeof err.code, "string", "LibsqlError.code must be a string");
    assert.ok(err.code.length > 0, "LibsqlError.code must not be empty");
}

function col(rs, name) {
    return rs.rows.map((r) => r[name]);
}

async function finish() {
    for (const c of clients) {
        try {
            c.close();
        } catch (e) {
            note(`closing a client threw: ${e}`);
        }
    }
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}

process.on("unhandledRejection", (e) => {
    failed += 1;
    console.log("not ok - no unhandled promise rejection");
    console.log(describeError(e));
    finish();
});

// ---------------------------------------------------------------------------------------------------
// Admin API and clients

async function adminCreateNamespace(ns) {
    const headers = { "content-type": "application/json" };
    if (ADMIN_TOKEN !== undefined) headers.authorization = `Bearer ${ADMIN_TOKEN}`;
    const url = `${ADMIN_URL}/v1/namespaces/${encodeURIComponent(ns)}/create`;
    const resp = await fetch(url, {
        method: "POST",
        headers,
        body: "{}",
        signal: AbortSignal.timeout(TIMEOUT_MS),
    });
    const body = await resp.text();
    assert.equal(resp.status, 200, `POST ${url} answered HTTP ${resp.status}: ${body.slice(0, 500)}`);
}

// @libsql/hrana-client 0.10 (used by @libsql/client 0.18) calls the custom fetch with a single
// `Request` (see node_modules/@libsql/hrana-client/lib-esm/http/stream.js, `#flush`); accept the
// `(url, init)` form too, in case another version does that.
function namespacedFetch(ns) {
    return (input, init) => {
        const req = input instanceof Request && init === undefined ? input : new Request(input, init);
        req.headers.set("x-namespace", ns);
        return fetch(req, { signal: AbortSignal.timeout(TIMEOUT_MS) });
    };
}

function makeClient(ns, extra = {}) {
    const config = { url: USER_URL, fetch: namespacedFetch(ns), ...extra };
    if (AUTH_TOKEN !== undefined) config.authToken = AUTH_TOKEN;
    const client = createClient(config);
    clients.push(client);
    return client;
}

// ---------------------------------------------------------------------------------------------------
// The checks

note(`@libsql/client web entry against ${USER_URL} (admin ${ADMIN_URL}), namespaces ${nsA} and ${nsB}`);

const createdA = await check("admin: create namespace A (POST /v1/namespaces/<ns>/create) answers 200", () => adminCreateNamespace(nsA));
const createdB = await check("admin: create namespace B answers 200", () => adminCreateNamespace(nsB));
if (!createdA || !createdB) {
    console.log("Bail out! cannot create the test namespaces through the admin API");
    await finish();
}

const dbA = makeClient(nsA);
const dbB = makeClient(nsB);
const dbBig = makeClient(nsA, { intMode: "bigint" });

// --- execute ----------------------------------------------------------------------------------------

await check("execute: CREATE TABLE returns an empty result", async () => {
    const rs = await dbA.execute(
        "CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, qty INTEGER)",
    );
    assert.deepEqual(rs.columns, []);
    assert.deepEqual(rs.rows, []);
    assert.equal(rs.rowsAffected, 0);
});

await check("execute: INSERT with positional ? args (object form, (sql, args) form, ?NNN)", async () => {
    let rs = await dbA.execute({ sql: "INSERT INTO items (name, qty) VALUES (?, ?)", args: ["apple", 3] });
    assert.equal(rs.rowsAffected, 1);
    assert.equal(typeof rs.lastInsertRowid, "bigint");
    assert.equal(rs.lastInsertRowid, 1n);
    assert.deepEqual(rs.rows, []);

    rs = await dbA.execute("INSERT INTO items (name, qty) VALUES (?, ?)", ["banana", 5]);
    assert.equal(rs.rowsAffected, 1);
    assert.equal(rs.lastInsertRowid, 2n);

    rs = await dbA.execute({ sql: "INSERT INTO items (qty, name) VALUES (?2, ?1)", args: ["cherry", 7] });
    assert.equal(rs.rowsAffected, 1);
    assert.equal(rs.lastInsertRowid, 3n);
});

await check("execute: INSERT with named args as an object ({ v: ... } for :v)", async () => {
    const rs = await dbA.execute({
        sql: "INSERT INTO items (name, qty) VALUES (:v, :q)",
        args: { v: "date", q: 11 },
    });
    assert.equal(rs.rowsAffected, 1);
    assert.equal(rs.lastInsertRowid, 4n);
});

await check("execute: named args with @v and $v, and keys that carry the prefix (':v')", async () => {
    let rs = await dbA.execute({ sql: "INSERT INTO items (name, qty) VALUES (@v, @q)", args: { v: "elder", q: 12 } });
    assert.equal(rs.lastInsertRowid, 5n);
    rs = await dbA.execute({ sql: "INSERT INTO items (name, qty) VALUES ($v, $q)", args: { v: "fig", q: 13 } });
    assert.equal(rs.lastInsertRowid, 6n);
    rs = await dbA.execute({ sql: "INSERT INTO items (name, qty) VALUES (:v, :q)", args: { ":v": "grape", ":q": 14 } });
    assert.equal(rs.lastInsertRowid, 7n);
    assert.equal(rs.rowsAffected, 1);
});

await check("execute: SELECT returns rows (by name and index), columns, columnTypes", async () => {
    const rs = await dbA.execute("SELECT id, name, qty FROM items ORDER BY id");
    assert.deepEqual(rs.columns, ["id", "name", "qty"]);
    assert.deepEqual(rs.columnTypes, ["INTEGER", "TEXT", "INTEGER"]);
    assert.equal(rs.rowsAffected, 0);
    assert.deepEqual(col(rs, "name"), ["apple", "banana", "cherry", "date", "elder", "fig", "grape"]);
    assert.deepEqual(col(rs, "qty"), [3, 5, 7, 11, 12, 13, 14]);
    const first = rs.rows[0];
    assert.equal(first.length, 3);
    assert.equal(first[0], 1);
    assert.equal(first[1], "apple");
    assert.equal(first.name, "apple");
    assert.deepEqual(Array.from(first), [1, "apple", 3]);
    assert.deepEqual({ ...rs.rows[2] }, { id: 3, name: "cherry", qty: 7 });
});

await check("execute: expression columns (alias, no decltype) and a WHERE with an arg", async () => {
    const rs = await dbA.execute({
        sql: "SELECT count(*) AS n, 1 + 1, upper(name) AS u FROM items WHERE qty > ?",
        args: [10],
    });
    assert.deepEqual(rs.columns, ["n", "1 + 1", "u"]);
    assert.deepEqual(rs.columnTypes, ["", "", ""]);
    assert.equal(rs.rows.length, 1);
    assert.equal(rs.rows[0].n, 4);
    assert.equal(rs.rows[0]["1 + 1"], 2);
});

await check("execute: multi-row INSERT, UPDATE and DELETE report rowsAffected", async () => {
    await dbA.execute("CREATE TABLE upd (id INTEGER PRIMARY KEY, k INTEGER)");
    let rs = await dbA.execute("INSERT INTO upd (k) VALUES (1), (2), (3), (4), (5)");
    assert.equal(rs.rowsAffected, 5);
    assert.equal(rs.lastInsertRowid, 5n);
    rs = await dbA.execute("UPDATE upd SET k = k * 10 WHERE k > 2");
    assert.equal(rs.rowsAffected, 3);
    rs = await dbA.execute({ sql: "DELETE FROM upd WHERE k >= ?", args: [40] });
    assert.equal(rs.rowsAffected, 2);
    rs = await dbA.execute("SELECT k FROM upd ORDER BY id");
    assert.deepEqual(col(rs, "k"), [1, 2, 30]);
});

// --- batch ------------------------------------------------------------------------------------------

await check('batch("write"): inserts (positional, named, [sql, args]) and a SELECT', async () => {
    await dbA.execute("CREATE TABLE bw (id INTEGER PRIMARY KEY, v TEXT)");
    const rs = await dbA.batch(
        [
            { sql: "INSERT INTO bw (v) VALUES (?)", args: ["w1"] },
            { sql: "INSERT INTO bw (v) VALUES (:v)", args: { v: "w2" } },
            ["INSERT INTO bw (v) VALUES (?)", ["w3"]],
            "SELECT id, v FROM bw ORDER BY id",
        ],
        "write",
    );
    assert.ok(Array.isArray(rs), "batch() resolves to an array of ResultSets");
    assert.equal(rs.length, 4);
    assert.deepEqual(rs.map((r) => r.lastInsertRowid).slice(0, 3), [1n, 2n, 3n]);
    assert.deepEqual(rs.map((r) => r.rowsAffected).slice(0, 3), [1, 1, 1]);
    assert.deepEqual(rs[3].columns, ["id", "v"]);
    assert.deepEqual(col(rs[3], "v"), ["w1", "w2", "w3"]);
    assert.deepEqual(col(rs[3], "id"), [1, 2, 3]);
});

await check('batch("read"): SELECTs', async () => {
    const rs = await dbA.batch(
        ["SELECT count(*) AS n FROM bw", { sql: "SELECT v FROM bw WHERE id = ?", args: [2] }],
        "read",
    );
    assert.equal(rs.length, 2);
    assert.equal(rs[0].rows[0].n, 3);
    assert.deepEqual(col(rs[1], "v"), ["w2"]);
});

await check('batch("deferred") and batch() with the default mode', async () => {
    let rs = await dbA.batch(
        [{ sql: "INSERT INTO bw (v) VALUES (?)", args: ["d1"] }, "SELECT count(*) AS n FROM bw"],
        "deferred",
    );
    assert.equal(rs.length, 2);
    assert.equal(rs[0].rowsAffected, 1);
    assert.equal(rs[0].lastInsertRowid, 4n);
    assert.equal(rs[1].rows[0].n, 4);
    rs = await dbA.batch([{ sql: "INSERT INTO bw (v) VALUES (?)", args: ["d2"] }, "SELECT max(id) AS m FROM bw"]);
    assert.equal(rs[0].lastInsertRowid, 5n);
    assert.equal(rs[1].rows[0].m, 5);
});

for (const mode of ["write", "read", "deferred"]) {
    await check(`batch("${mode}"): a failing statement (UNIQUE) rejects the batch and leaves none of its rows`, async () => {
        await dbA.execute("CREATE TABLE IF NOT EXISTS uq (id INTEGER PRIMARY KEY, name TEXT UNIQUE)");
        await dbA.execute({ sql: "INSERT OR IGNORE INTO uq (name) VALUES (?)", args: ["taken"] });
        const err = await rejection(
            dbA.batch(
                [
                    { sql: "INSERT INTO uq (name) VALUES (?)", args: [`${mode}-1`] },
                    { sql: "INSERT INTO uq (name) VALUES (?)", args: ["taken"] },
                    { sql: "INSERT INTO uq (name) VALUES (?)", args: [`${mode}-3`] },
                ],
                mode,
            ),
        );
        assertLibsqlError(err);
        note(`batch("${mode}") rejected: code=${err.code} message=${JSON.stringify(err.message)}`);
        if (mode !== "read") {
            // (In "read" mode a server may refuse the first INSERT already.)
            assert.ok(err instanceof LibsqlBatchError, `expected a LibsqlBatchError, got ${err.name}`);
            assert.equal(err.statementIndex, 1);
            assert.match(err.message, /UNIQUE/i);
        }
        const rs = await dbA.execute("SELECT name FROM uq ORDER BY id");
        assert.deepEqual(col(rs, "name"), ["taken"]);
    });
}

// --- interactive transactions -------------------------------------------------------------------------

await check('transaction("write"): several tx.execute and a tx.batch in one transaction, then commit', async () => {
    await dbA.execute("CREATE TABLE tx (id INTEGER PRIMARY KEY, v TEXT)");
    const tx = await dbA.transaction("write");
    try {
        let rs = await tx.execute({ sql: "INSERT INTO tx (v) VALUES (?)", args: ["t1"] });
        assert.equal(rs.rowsAffected, 1);
        assert.equal(rs.lastInsertRowid, 1n);
        rs = await tx.execute({ sql: "INSERT INTO tx (v) VALUES (:v)", args: { v: "t2" } });
        assert.equal(rs.lastInsertRowid, 2n);
        rs = await tx.execute("INSERT INTO tx (v) VALUES ('t3')");
        assert.equal(rs.lastInsertRowid, 3n);
        rs = await tx.execute("SELECT count(*) AS n FROM tx");
        assert.equal(rs.rows[0].n, 3, "the transaction sees its own writes");
        const results = await tx.batch([
            { sql: "INSERT INTO tx (v) VALUES (?)", args: ["t4"] },
            "SELECT v FROM tx ORDER BY id",
        ]);
        assert.equal(results.length, 2);
        assert.equal(results[0].lastInsertRowid, 4n);
        assert.deepEqual(col(results[1], "v"), ["t1", "t2", "t3", "t4"]);
        await tx.commit();
        assert.equal(tx.closed, true);
    } finally {
        tx.close();
    }
    const rs = await dbA.execute("SELECT v FROM tx ORDER BY id");
    assert.deepEqual(col(rs, "v"), ["t1", "t2", "t3", "t4"], "committed rows are visible afterwards");
});

await check('transaction("write"): rollback discards its rows', async () => {
    await dbA.execute("CREATE TABLE txr (id INTEGER PRIMARY KEY, v TEXT)");
    const tx = await dbA.transaction("write");
    try {
        await tx.execute({ sql: "INSERT INTO txr (v) VALUES (?)", args: ["r1"] });
        await tx.execute({ sql: "INSERT INTO txr (v) VALUES (?)", args: ["r2"] });
        const rs = await tx.execute("SELECT count(*) AS n FROM txr");
        assert.equal(rs.rows[0].n, 2);
        await tx.rollback();
        assert.equal(tx.closed, true);
    } finally {
        tx.close();
    }
    const rs = await dbA.execute("SELECT count(*) AS n FROM txr");
    assert.equal(rs.rows[0].n, 0, "rolled-back rows are gone");
});

await check("transaction: uncommitted writes are invisible to other connections", async () => {
    await dbA.execute("CREATE TABLE txi (id INTEGER PRIMARY KEY, v TEXT)");
    const tx = await dbA.transaction("write");
    try {
        await tx.execute({ sql: "INSERT INTO txi (v) VALUES (?)", args: ["hidden"] });
        const outside = await dbA.execute("SELECT count(*) AS n FROM txi");
        assert.equal(outside.rows[0].n, 0, "another connection must not see uncommitted rows");
        const inside = await tx.execute("SELECT count(*) AS n FROM txi");
        assert.equal(inside.rows[0].n, 1);
        await tx.rollback();
    } finally {
        tx.close();
    }
});

await check("transaction: a failing statement rejects but does not end the transaction", async () => {
    await dbA.execute("CREATE TABLE txe (id INTEGER PRIMARY KEY, name TEXT UNIQUE)");
    const tx = await dbA.transaction("write");
    try {
        await tx.execute({ sql: "INSERT INTO txe (name) VALUES (?)", args: ["x"] });
        const err = await rejection(tx.execute({ sql: "INSERT INTO txe (name) VALUES (?)", args: ["x"] }));
        assertLibsqlError(err);
        assert.match(err.message, /UNIQUE/i);
        note(`UNIQUE violation inside a transaction: code=${err.code}`);
        assert.equal(tx.closed, false, "the transaction stays open");
        await tx.execute({ sql: "INSERT INTO txe (name) VALUES (?)", args: ["y"] });
        await tx.commit();
    } finally {
        tx.close();
    }
    const rs = await dbA.execute("SELECT name FROM txe ORDER BY id");
    assert.deepEqual(col(rs, "name"), ["x", "y"]);
});

await check('transaction("deferred"): tx.executeMultiple then commit', async () => {
    await dbA.execute("CREATE TABLE txm (id INTEGER PRIMARY KEY, v TEXT)");
    const tx = await dbA.transaction("deferred");
    try {
        await tx.executeMultiple("INSERT INTO txm (v) VALUES ('m1'); INSERT INTO txm (v) VALUES ('m2');");
        const rs = await tx.execute("SELECT count(*) AS n FROM txm");
        assert.equal(rs.rows[0].n, 2);
        await tx.commit();
    } finally {
        tx.close();
    }
    const rs = await dbA.execute("SELECT v FROM txm ORDER BY id");
    assert.deepEqual(col(rs, "v"), ["m1", "m2"]);
});

await check('transaction("read"): reads in a read transaction', async () => {
    const tx = await dbA.transaction("read");
    try {
        const a = await tx.execute("SELECT count(*) AS n FROM tx");
        const b = await tx.execute({ sql: "SELECT v FROM tx WHERE id = ?", args: [1] });
        assert.equal(a.rows[0].n, 4);
        assert.deepEqual(col(b, "v"), ["t1"]);
        await tx.commit();
    } finally {
        tx.close();
    }
});

// The client keeps up to 30 SQL texts per stream on the server (store_sql / sql_id); older ones are
// evicted with close_sql, and texts of 5000+ characters (or past the 30th in one batch) are sent inline.
await check("transaction: 40 distinct statements on one stream (store_sql, sql_id, close_sql on eviction)", async () => {
    const tx = await dbA.transaction("write");
    try {
        for (let i = 0; i < 40; i += 1) {
            const rs = await tx.execute({ sql: `SELECT ? + ${i} AS v`, args: [1n] });
            assert.equal(rs.rows[0].v, 1 + i);
        }
        const again = await tx.execute({ sql: "SELECT ? + 0 AS v", args: [5n] });
        assert.equal(again.rows[0].v, 5);
        await tx.commit();
    } finally {
        tx.close();
    }
});

await check("batch: 40 distinct statements and one of 6000+ characters (inline sql and sql_id mixed)", async () => {
    const stmts = Array.from({ length: 40 }, (_, i) => ({ sql: `SELECT ${i} AS v, ? AS w`, args: [`s${i}`] }));
    const long = "x".repeat(6000);
    stmts.push({ sql: `SELECT length('${long}') AS len`, args: [] });
    const rs = await dbA.batch(stmts, "read");
    assert.equal(rs.length, 41);
    assert.deepEqual(rs.slice(0, 40).map((r) => r.rows[0].v), Array.from({ length: 40 }, (_, i) => i));
    assert.deepEqual(rs.slice(0, 40).map((r) => r.rows[0].w), Array.from({ length: 40 }, (_, i) => `s${i}`));
    assert.equal(rs[40].rows[0].len, 6000);
});

// --- executeMultiple ----------------------------------------------------------------------------------

await check("executeMultiple: several statements (with a comment and a ';' inside a string literal)", async () => {
    const result = await dbA.executeMultiple(`
        CREATE TABLE em (id INTEGER PRIMARY KEY, v TEXT);
        -- a comment line
        INSERT INTO em (v) VALUES ('one');
        INSERT INTO em (v) VALUES ('two; with a semicolon');
        INSERT INTO em (v) VALUES ('three');
    `);
    assert.equal(result, undefined);
    const rs = await dbA.execute("SELECT v FROM em ORDER BY id");
    assert.deepEqual(col(rs, "v"), ["one", "two; with a semicolon", "three"]);
});

await check("executeMultiple: stops at the first failing statement", async () => {
    const err = await rejection(
        dbA.executeMultiple(
            "INSERT INTO em (v) VALUES ('four'); INSERT INTO em_missing (v) VALUES ('x'); INSERT INTO em (v) VALUES ('five');",
        ),
    );
    assertLibsqlError(err);
    assert.match(err.message, /no such table/i);
    const rs = await dbA.execute("SELECT v FROM em WHERE id > 3 ORDER BY id");
    assert.deepEqual(col(rs, "v"), ["four"], "statements before the failure ran, those after it did not");
});

// --- values -------------------------------------------------------------------------------------------

await check("blob: a Uint8Array with bytes 0..255 round-trips exactly, returned as ArrayBuffer", async () => {
    await dbA.execute("CREATE TABLE blobs (id INTEGER PRIMARY KEY, b BLOB)");
    const bytes = Uint8Array.from({ length: 256 }, (_, i) => i);
    await dbA.execute({ sql: "INSERT INTO blobs (id, b) VALUES (1, ?)", args: [bytes] });
    const rs = await dbA.execute("SELECT b, typeof(b) AS t, length(b) AS len, hex(b) AS h FROM blobs WHERE id = 1");
    const v = rs.rows[0].b;
    assert.ok(v instanceof ArrayBuffer, `expected an ArrayBuffer, got ${Object.prototype.toString.call(v)}`);
    assert.equal(v.byteLength, 256);
    assert.deepEqual(new Uint8Array(v), bytes);
    assert.equal(rs.rows[0].t, "blob");
    assert.equal(rs.rows[0].len, 256);
    assert.equal(rs.rows[0].h, Buffer.from(bytes).toString("hex").toUpperCase());
});

await check("blob: empty blob (not NULL), an ArrayBuffer argument, a 64 KiB random blob", async () => {
    await dbA.execute({ sql: "INSERT INTO blobs (id, b) VALUES (2, ?)", args: [new Uint8Array(0)] });
    const ab = Uint8Array.from([0xde, 0xad, 0xbe, 0xef]).buffer;
    await dbA.execute({ sql: "INSERT INTO blobs (id, b) VALUES (3, ?)", args: [ab] });
    const big = randomBytes(65536);
    await dbA.execute({ sql: "INSERT INTO blobs (id, b) VALUES (4, :b)", args: { b: big } });
    const rs = await dbA.execute("SELECT id, b, typeof(b) AS t FROM blobs WHERE id IN (2, 3, 4) ORDER BY id");
    assert.deepEqual(col(rs, "t"), ["blob", "blob", "blob"]);
    const [empty, dead, rnd] = col(rs, "b");
    assert.ok(empty instanceof ArrayBuffer && empty.byteLength === 0, "empty blob comes back as an empty ArrayBuffer");
    assert.deepEqual(new Uint8Array(dead), new Uint8Array([0xde, 0xad, 0xbe, 0xef]));
    assert.ok(rnd instanceof ArrayBuffer);
    assert.ok(Buffer.from(rnd).equals(big), "64 KiB blob round-trips byte for byte");
});

await check('intMode "bigint": 9223372036854775807n and -9223372036854775808n round-trip exactly', async () => {
    await dbBig.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v INTEGER)");
    const values = [9223372036854775807n, -9223372036854775808n, 9007199254740993n, 0n, -1n];
    for (const [i, v] of values.entries()) {
        const rs = await dbBig.execute({ sql: "INSERT INTO big (v) VALUES (?)", args: [v] });
        assert.equal(rs.lastInsertRowid, BigInt(i + 1));
    }
    const rs = await dbBig.execute("SELECT id, v, typeof(v) AS t FROM big ORDER BY id");
    assert.deepEqual(col(rs, "v"), values);
    assert.deepEqual(col(rs, "id"), [1n, 2n, 3n, 4n, 5n]);
    assert.deepEqual(col(rs, "t"), Array(values.length).fill("integer"));
    const lit = await dbBig.execute({
        sql: "SELECT 9223372036854775807 AS mx, -9223372036854775808 AS mn, ? AS echo, (SELECT v FROM big WHERE id = 1) = 9223372036854775807 AS eq",
        args: [-9223372036854775808n],
    });
    assert.equal(lit.rows[0].mx, 9223372036854775807n);
    assert.equal(lit.rows[0].mn, -9223372036854775808n);
    assert.equal(lit.rows[0].echo, -9223372036854775808n);
    assert.equal(lit.rows[0].eq, 1n);
    const named = await dbBig.execute({ sql: "SELECT :v AS v", args: { v: 9223372036854775807n } });
    assert.equal(named.rows[0].v, 9223372036854775807n);
});

await check("floats: REAL values round-trip exactly (0.1+0.2, 1e300, 5e-324, ...)", async () => {
    await dbA.execute("CREATE TABLE fl (id INTEGER PRIMARY KEY, x REAL, y)");
    const values = [3.14159, -0.5, 0.1 + 0.2, 1e300, -1e-300, 5e-324, 2 ** 53 + 2, 42];
    const rsIns = await dbA.batch(
        values.map((x) => ({ sql: "INSERT INTO fl (x) VALUES (?)", args: [x] })),
        "write",
    );
    assert.equal(rsIns.length, values.length);
    const rs = await dbA.execute("SELECT x, typeof(x) AS t FROM fl ORDER BY id");
    assert.deepEqual(col(rs, "x"), values);
    assert.deepEqual(col(rs, "t"), Array(values.length).fill("real"));
    const e = await dbA.execute("SELECT 1.5 AS a, 2.0 AS b, typeof(2.0) AS bt, -0.25 AS c");
    assert.equal(e.rows[0].a, 1.5);
    assert.equal(e.rows[0].b, 2);
    assert.equal(e.rows[0].bt, "real");
    assert.equal(e.rows[0].c, -0.25);
});

await check("floats: a JS number argument is bound as REAL (the client sends 42 as a float)", async () => {
    await dbA.execute({ sql: "INSERT INTO fl (id, y) VALUES (100, ?)", args: [42] });
    const rs = await dbA.execute("SELECT y, typeof(y) AS t FROM fl WHERE id = 100");
    assert.equal(rs.rows[0].y, 42);
    assert.equal(rs.rows[0].t, "real");
});

await check("NULL: null arguments and NULL results", async () => {
    await dbA.execute({ sql: "INSERT INTO fl (id, x, y) VALUES (200, ?, ?)", args: [null, null] });
    const rs = await dbA.execute("SELECT x, y, typeof(x) AS t, NULL AS n FROM fl WHERE id = 200");
    assert.equal(rs.rows.length, 1);
    assert.equal(rs.rows[0].x, null);
    assert.equal(rs.rows[0].y, null);
    assert.equal(rs.rows[0].t, "null");
    assert.equal(rs.rows[0].n, null);
    const named = await dbA.execute({ sql: "SELECT :v IS NULL AS is_null", args: { v: null } });
    assert.equal(named.rows[0].is_null, 1);
});

await check("text and booleans: unicode, empty string, true/false as 1/0", async () => {
    await dbA.execute("CREATE TABLE txt (id INTEGER PRIMARY KEY, s TEXT, f)");
    const unicode = "héllo wörld, 世界 🎉 \"quotes\" \\ back\nslash";
    await dbA.execute({ sql: "INSERT INTO txt (s, f) VALUES (?, ?)", args: [unicode, true] });
    await dbA.execute({ sql: "INSERT INTO txt (s, f) VALUES (?, ?)", args: ["", false] });
    const rs = await dbA.execute("SELECT s, length(s) AS len, typeof(s) AS t, f, typeof(f) AS ft FROM txt ORDER BY id");
    assert.deepEqual(col(rs, "s"), [unicode, ""]);
    assert.deepEqual(col(rs, "t"), ["text", "text"]);
    assert.deepEqual(col(rs, "len"), [[...unicode].length, 0]);
    assert.deepEqual(col(rs, "f"), [1, 0]);
    assert.deepEqual(col(rs, "ft"), ["integer", "integer"]);
});

// --- errors -------------------------------------------------------------------------------------------

await check("errors: an SQL syntax error surfaces as a LibsqlError with a string code", async () => {
    const err = await rejection(dbA.execute("SELEC 1"));
    assertLibsqlError(err);
    note(`syntax error: code=${err.code} message=${JSON.stringify(err.message)}`);
    const rs = await dbA.execute("SELECT 1 AS one");
    assert.equal(rs.rows[0].one, 1, "the client is still usable after an error");
});

await check("errors: an unknown table fails with \"no such table\"", async () => {
    const err = await rejection(dbA.execute("SELECT * FROM no_such_table_here"));
    assertLibsqlError(err);
    assert.match(err.message, /no such table/i);
    note(`unknown table: code=${err.code} message=${JSON.stringify(err.message)}`);
});

await check("errors: a UNIQUE violation in execute is a LibsqlError", async () => {
    const err = await rejection(dbA.execute({ sql: "INSERT INTO items (name, qty) VALUES (?, ?)", args: ["apple", 1] }));
    assertLibsqlError(err);
    assert.match(err.message, /UNIQUE/i);
    note(`UNIQUE violation: code=${err.code} message=${JSON.stringify(err.message)}`);
});

// --- namespaces ---------------------------------------------------------------------------------------

await check("namespaces: a table created in A does not exist in B (\"no such table\")", async () => {
    const err = await rejection(dbB.execute("SELECT * FROM items"));
    assertLibsqlError(err);
    assert.match(err.message, /no such table/i);
});

await check("namespaces: the same table name in A and B holds separate data", async () => {
    await dbB.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)");
    await dbB.execute({ sql: "INSERT INTO items (name) VALUES (?)", args: ["only-in-b"] });
    const b = await dbB.execute("SELECT name FROM items");
    assert.deepEqual(col(b, "name"), ["only-in-b"]);
    const a = await dbA.execute({ sql: "SELECT count(*) AS n FROM items WHERE name = ?", args: ["only-in-b"] });
    assert.equal(a.rows[0].n, 0);
    const a2 = await dbA.execute("SELECT count(*) AS n FROM items");
    assert.equal(a2.rows[0].n, 7);
});

await check("namespaces: batch, executeMultiple and transaction requests go to their namespace", async () => {
    await dbB.executeMultiple("CREATE TABLE bonly (v TEXT); INSERT INTO bonly VALUES ('seq');");
    await dbB.batch([{ sql: "INSERT INTO bonly VALUES (?)", args: ["batch"] }], "write");
    const tx = await dbB.transaction("write");
    try {
        await tx.execute({ sql: "INSERT INTO bonly VALUES (?)", args: ["tx"] });
        await tx.commit();
    } finally {
        tx.close();
    }
    const rs = await dbB.execute("SELECT v FROM bonly ORDER BY rowid");
    assert.deepEqual(col(rs, "v"), ["seq", "batch", "tx"]);
    const err = await rejection(dbA.execute("SELECT * FROM bonly"));
    assert.match(err.message, /no such table/i);
});

await check("namespaces: a namespace that was never created is refused", async () => {
    const ghost = makeClient(`js-missing-${randomBytes(4).toString("hex")}`);
    const err = await rejection(ghost.execute("SELECT 1"));
    assertLibsqlError(err);
    note(`unknown namespace: code=${err.code} message=${JSON.stringify(err.message)}`);
});

// --- concurrency and close ----------------------------------------------------------------------------

await check("concurrency: 8 parallel execute() writes and 8 parallel reads all succeed", async () => {
    await dbA.execute("CREATE TABLE conc (id INTEGER PRIMARY KEY, k INTEGER)");
    const writes = await Promise.all(
        Array.from({ length: 8 }, (_, i) => dbA.execute({ sql: "INSERT INTO conc (k) VALUES (?)", args: [BigInt(i)] })),
    );
    assert.deepEqual(writes.map((r) => r.rowsAffected), Array(8).fill(1));
    const reads = await Promise.all(Array.from({ length: 8 }, () => dbA.execute("SELECT count(*) AS n FROM conc")));
    assert.deepEqual(reads.map((r) => r.rows[0].n), Array(8).fill(8));
    const rs = await dbA.execute("SELECT k FROM conc ORDER BY k");
    assert.deepEqual(col(rs, "k"), [0, 1, 2, 3, 4, 5, 6, 7]);
});

// --- a read replica ----------------------------------------------------------------------------------
// With LIBSQL_REPLICA_URL: a `libsql-wal run --replicate-from <primary>` following namespace
// `default`, with the same user token.

if (REPLICA_URL !== undefined) {
    const onPrimary = makeClient("default");
    const onReplica = makeClient("default", { url: REPLICA_URL });
    const table = `replicated_${randomBytes(4).toString("hex")}`;
    await check("replica: reads from the replica what was written to the primary", async () => {
        await onPrimary.execute(`CREATE TABLE ${table} (x INTEGER, y TEXT)`);
        await onPrimary.batch(
            [1, 2, 3].map((x) => ({ sql: `INSERT INTO ${table} VALUES (?, ?)`, args: [x, `row ${x}`] })),
            "write",
        );
        for (;;) {
            try {
                const rs = await onReplica.execute(`SELECT x, y FROM ${table} ORDER BY x`);
                if (rs.rows.length === 3) {
                    assert.deepEqual(col(rs, "y"), ["row 1", "row 2", "row 3"]);
                    return;
                }
            } catch (e) {
                if (!/no such table/i.test(String(e?.message))) throw e;
            }
            await new Promise((resolve) => setTimeout(resolve, 50));
        }
    });
    await check("replica: a write to the replica is refused with SQLITE_READONLY", async () => {
        const err = await rejection(onReplica.execute(`INSERT INTO ${table} VALUES (4, 'four')`));
        assertLibsqlError(err);
        assert.equal(err.code, "SQLITE_READONLY", err.message);
        const rs = await onPrimary.execute(`SELECT count(*) AS n FROM ${table}`);
        assert.equal(rs.rows[0].n, 3);
    });
    if (FORWARDING_URL !== undefined) {
        // A replica run with --forward-writes: writes go to the primary, and are read back
        // through the replica as soon as they are answered.
        const forwarding = makeClient("default", { url: FORWARDING_URL });
        const count = async (client) => (await client.execute(`SELECT count(*) AS n FROM ${table}`)).rows[0].n;
        await check("forwarding replica: a write through it is read back through it at once", async () => {
            for (;;) {
                try {
                    if ((await count(forwarding)) === 3) break;
                } catch (e) {
                    if (!/no such table/i.test(String(e?.message))) throw e;
                }
                await new Promise((resolve) => setTimeout(resolve, 50));
            }
            for (let x = 4; x <= 8; x++) {
                const rs = await forwarding.execute({ sql: `INSERT INTO ${table} VALUES (?, ?)`, args: [x, `row ${x}`] });
                assert.equal(rs.rowsAffected, 1);
                assert.equal(await count(forwarding), x);
            }
        });
        await check("forwarding replica: a write batch and a write transaction through it", async () => {
            await forwarding.batch(
                [9, 10].map((x) => ({ sql: `INSERT INTO ${table} VALUES (?, ?)`, args: [x, `row ${x}`] })),
                "write",
            );
            assert.equal(await count(forwarding), 10);
            const tx = await forwarding.transaction("write");
            await tx.execute({ sql: `INSERT INTO ${table} VALUES (?, ?)`, args: [11, "row 11"] });
            const inside = await tx.execute(`SELECT count(*) AS n FROM ${table}`);
            assert.equal(inside.rows[0].n, 11);
            await tx.commit();
            assert.equal(await count(forwarding), 11);
            assert.equal(await count(onPrimary), 11);
            const rs = await forwarding.execute(`SELECT y FROM ${table} ORDER BY x`);
            assert.deepEqual(col(rs, "y"), Array.from({ length: 11 }, (_, i) => `row ${i + 1}`));
        });
    }
}

await check("close: every client closes", async () => {
    for (const c of clients) c.close();
    for (const c of clients) assert.equal(c.closed, true);
});

await finish();
