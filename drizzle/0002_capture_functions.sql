-- Capture functions, called by the triggers the gateway installs on watched tables as events
-- need them. They only record changes (matching happens in the dispatcher), so a user's write
-- pays one extra insert. Inserts and deletes are captured per statement from the transition
-- table, one set-based insert however many rows; updates per row, to pair the old and new row.
-- SECURITY DEFINER: the user's application needs no rights on the gateway's schema. A failure
-- is reported as a WARNING and never fails the user's write.
INSERT INTO "webhook_gateway"."dispatcher_state" ("singleton", "idle") VALUES (true, true) ON CONFLICT DO NOTHING;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION "webhook_gateway"."wake_dispatcher"() RETURNS void
LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
  -- NOTIFY serialises commits on a global lock, so only a waiting dispatcher is woken.
  SELECT pg_notify('webhook_gateway_outbox', '') FROM "webhook_gateway"."dispatcher_state" WHERE "idle";
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION "webhook_gateway"."capture_inserts"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO "webhook_gateway"."outbox" ("operation", "table_name", "new_row")
  SELECT 'INSERT', TG_TABLE_NAME, to_json(changed) FROM new_rows changed;
  PERFORM "webhook_gateway"."wake_dispatcher"();
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'webhook gateway: inserts into %.% not captured: %', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION "webhook_gateway"."capture_deletes"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO "webhook_gateway"."outbox" ("operation", "table_name", "old_row")
  SELECT 'DELETE', TG_TABLE_NAME, to_json(changed) FROM old_rows changed;
  PERFORM "webhook_gateway"."wake_dispatcher"();
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'webhook gateway: deletes from %.% not captured: %', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END
$$;
--> statement-breakpoint
CREATE OR REPLACE FUNCTION "webhook_gateway"."capture_update"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO "webhook_gateway"."outbox" ("operation", "table_name", "old_row", "new_row")
  VALUES ('UPDATE', TG_TABLE_NAME, to_json(OLD), to_json(NEW));
  PERFORM "webhook_gateway"."wake_dispatcher"();
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'webhook gateway: update of %.% not captured: %', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END
$$;
