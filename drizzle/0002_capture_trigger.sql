-- The capture trigger function. Row triggers on watched tables call it (installed and removed
-- by the gateway as events need them). It only records the change; matching happens in the
-- dispatcher, so the user's write pays for one insert. SECURITY DEFINER: the user's
-- application needs no rights on the gateway's schema. A failure is reported as a warning
-- and never fails the user's write.
CREATE OR REPLACE FUNCTION "webhook_gateway"."capture_change"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO "webhook_gateway"."outbox" ("operation", "table_name", "old_row", "new_row")
  VALUES (
    TG_OP,
    TG_TABLE_NAME,
    CASE WHEN TG_OP <> 'INSERT' THEN to_json(OLD) END,
    CASE WHEN TG_OP <> 'DELETE' THEN to_json(NEW) END
  );
  PERFORM pg_notify('webhook_gateway_outbox', '');
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'webhook gateway: % on %.% not captured: %', TG_OP, TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END
$$;
