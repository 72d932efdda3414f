-- What a gateway last reported on its status topic besides its state (vigil.wire.GatewayEvent:
-- buffer_lost when its store-and-forward buffer was missing, empty or unreadable at start).
ALTER TABLE gateway_status
    ADD COLUMN last_event         text,
    ADD COLUMN last_event_ts      timestamptz,
    ADD COLUMN last_event_detail  text,
    ADD CONSTRAINT gateway_status_event_ts CHECK ((last_event IS NULL) = (last_event_ts IS NULL));
