-- A file made by CdrStore before store.migrations (PRAGMA user_version 3): one
-- answered CDR with its ledger debit, one busy CDR, one call left open by a run
-- that died on host legacy-host (heartbeat 12:01:00). Made by the switch at cb971d6.
BEGIN TRANSACTION;
CREATE TABLE cdrs (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    call_id           TEXT    NOT NULL,
    account_id        TEXT,
    source            TEXT    NOT NULL,
    caller            TEXT    NOT NULL,
    callee_dialed     TEXT    NOT NULL,
    callee_normalised TEXT,
    callee_sent       TEXT,
    gateway_id        TEXT,
    route_prefix      TEXT,
    invite_at         TEXT    NOT NULL,
    ring_at           TEXT,
    answer_at         TEXT,
    end_at            TEXT    NOT NULL,
    duration          REAL    NOT NULL,
    billsec           INTEGER NOT NULL,
    pdd               REAL,
    hangup_side       TEXT,
    end_reason        TEXT    NOT NULL,
    status            INTEGER NOT NULL,
    q850              INTEGER NOT NULL,
    sell_rate         TEXT,
    sell_cost         TEXT,
    buy_rate          TEXT,
    buy_cost          TEXT,
    attempts          TEXT    NOT NULL,
    detail            TEXT    NOT NULL DEFAULT ''
);
INSERT INTO "cdrs" VALUES(1,'done-1','acme','192.0.2.10:5060','alice','447911123456','447911123456',NULL,'gw1',NULL,'2026-03-01T12:00:00.000000+00:00','2026-03-01T12:00:01.000000+00:00','2026-03-01T12:00:02.000000+00:00','2026-03-01T12:01:02.000000+00:00',60.0,60,1.0,NULL,'normal_clearing',200,16,'0.100000','0.100000',NULL,NULL,'[{"gateway_id":"gw1","status":200,"outcome":"answered","started_at":"2026-03-01T12:00:00.000000+00:00","ended_at":"2026-03-01T12:01:02.000000+00:00","request_uri":null,"ring_at":null}]','');
INSERT INTO "cdrs" VALUES(2,'busy-1','acme','192.0.2.10:5060','alice','447911123456','447911123456',NULL,'gw1',NULL,'2026-03-01T12:00:00.000000+00:00','2026-03-01T12:00:01.000000+00:00',NULL,'2026-03-01T12:01:02.000000+00:00',0.0,0,1.0,NULL,'busy',486,17,'0.100000',NULL,NULL,NULL,'[{"gateway_id":"gw1","status":486,"outcome":"failed","started_at":"2026-03-01T12:00:00.000000+00:00","ended_at":"2026-03-01T12:01:02.000000+00:00","request_uri":null,"ring_at":null}]','');
CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id    TEXT    NOT NULL,
    at            TEXT    NOT NULL,
    kind          TEXT    NOT NULL CHECK (kind IN ('topup', 'adjustment', 'call', 'refund')),
    amount        INTEGER NOT NULL,
    balance_after INTEGER NOT NULL,
    reference     TEXT    NOT NULL,
    run_id        TEXT
);
INSERT INTO "ledger" VALUES(1,'acme','2026-03-01T12:01:02.000000+00:00','call',-100000000,-100000000,'done-1','5cc5de44c0bf4ab69529cb6378ffc769');
CREATE TABLE open_calls (
    id         INTEGER PRIMARY KEY,
    run_id     TEXT    NOT NULL REFERENCES switch_runs (run_id),
    call_id    TEXT    NOT NULL,
    answer_at  TEXT    NOT NULL,
    account_id TEXT,
    gateway_id TEXT,
    sell_deck    TEXT,
    buy_deck     TEXT,
    max_duration REAL,
    record       TEXT    NOT NULL,
    billed_account TEXT,
    billed_until   INTEGER,
    reserved       INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "open_calls" VALUES(1,'5cc5de44c0bf4ab69529cb6378ffc769','up-1','2026-03-01T12:00:02.000000+00:00','acme','gw1','sell','gw1',3600.0,'{"call_id":"up-1","account_id":"acme","source":"192.0.2.10:5060","caller":"alice","callee_dialed":"447911123456","callee_normalised":"447911123456","callee_sent":null,"gateway_id":"gw1","route_prefix":null,"invite_at":"2026-03-01T12:00:00.000000+00:00","ring_at":"2026-03-01T12:00:01.000000+00:00","answer_at":"2026-03-01T12:00:02.000000+00:00","end_at":"2026-03-01T12:00:02.000000+00:00","duration":0.0,"billsec":0,"pdd":1.0,"hangup_side":null,"end_reason":"system_failure","status":200,"q850":16,"sell_rate":"0.100000","sell_cost":null,"buy_rate":null,"buy_cost":null,"attempts":"[{\"gateway_id\":\"gw1\",\"status\":200,\"outcome\":\"answered\",\"started_at\":\"2026-03-01T12:00:00.000000+00:00\",\"ended_at\":null,\"request_uri\":null,\"ring_at\":null}]","detail":""}','acme',60,100000000);
CREATE TABLE registrations (
    account_id    TEXT    NOT NULL,
    contact       TEXT    NOT NULL,
    expires_at    REAL    NOT NULL,
    q             REAL    NOT NULL,
    call_id       TEXT    NOT NULL,
    cseq          INTEGER NOT NULL,
    transport     TEXT    NOT NULL,
    source_ip     TEXT    NOT NULL,
    source_port   INTEGER NOT NULL,
    nat           INTEGER NOT NULL,
    registered_at REAL    NOT NULL,
    user_agent    TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (account_id, contact)
);
CREATE TABLE switch_runs (
    run_id             TEXT    PRIMARY KEY,
    host               TEXT    NOT NULL,
    pid                INTEGER NOT NULL,
    started_at         TEXT    NOT NULL,
    heartbeat_at       TEXT    NOT NULL,
    heartbeat_interval REAL    NOT NULL,
    stopped_at         TEXT,
    recovered_at       TEXT,
    recovered_calls    INTEGER NOT NULL DEFAULT 0
);
INSERT INTO "switch_runs" VALUES('5cc5de44c0bf4ab69529cb6378ffc769','legacy-host',999999999,'2026-12-05T03:53:33.781453+00:00','2026-03-01T12:01:00.000000+00:00',5.0,NULL,NULL,0);
CREATE INDEX cdrs_invite_at ON cdrs (invite_at);
CREATE INDEX cdrs_call_id ON cdrs (call_id);
CREATE INDEX open_calls_key ON open_calls (call_id, answer_at);
CREATE INDEX open_calls_run ON open_calls (run_id);
CREATE INDEX ledger_account ON ledger (account_id, id);
DELETE FROM "sqlite_sequence";
INSERT INTO "sqlite_sequence" VALUES('cdrs',2);
INSERT INTO "sqlite_sequence" VALUES('ledger',1);
COMMIT;
PRAGMA user_version = 3;
