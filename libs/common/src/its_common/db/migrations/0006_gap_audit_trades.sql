-- The trades audit writes gap_audit rows beside the bars audit: `subject` tells them apart
-- (a minute can be missing bars and trades at once), and each audit replaces only its own rows.
ALTER TABLE gap_audit
    ADD COLUMN subject text NOT NULL DEFAULT 'bars' CHECK (subject IN ('bars', 'trades'));
ALTER TABLE gap_audit DROP CONSTRAINT gap_audit_pkey;
ALTER TABLE gap_audit ADD PRIMARY KEY (audit_date, symbol, subject, minute_ts, kind);
