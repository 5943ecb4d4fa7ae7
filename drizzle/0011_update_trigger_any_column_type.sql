-- Update triggers compare the rows' images (`*<>`), not their values: `is distinct from` needs an
-- equality operator for every column, and a table with a json (or xml, point, ...) column made
-- every update of it fail. They also name their table as an argument: a partitioned table's row
-- trigger is copied onto its partitions, and its copies capture under the partitioned table's
-- name, the one events use, not the partition's.
CREATE OR REPLACE FUNCTION "webhook_gateway"."capture_update"() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
BEGIN
  INSERT INTO "webhook_gateway"."outbox" ("operation", "table_name", "old_row", "new_row")
  VALUES ('UPDATE', CASE WHEN TG_NARGS > 0 THEN TG_ARGV[0] ELSE TG_TABLE_NAME END, to_json(OLD), to_json(NEW));
  PERFORM "webhook_gateway"."wake_dispatcher"();
  RETURN NULL;
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'webhook gateway: update of %.% not captured: %', TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
  RETURN NULL;
END
$$;--> statement-breakpoint
DO $$
DECLARE installed record;
BEGIN
  FOR installed IN
    SELECT n.nspname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE t.tgname = 'webhook_gateway_update' AND NOT t.tgisinternal AND t.tgparentid = 0
  LOOP
    BEGIN
      EXECUTE format('CREATE OR REPLACE TRIGGER webhook_gateway_update AFTER UPDATE ON %I.%I FOR EACH ROW '
        'WHEN (old.* *<> new.*) EXECUTE FUNCTION webhook_gateway.capture_update(%L)', installed.nspname, installed.relname, installed.relname);
    EXCEPTION WHEN insufficient_privilege THEN
      -- A table the gateway no longer owns keeps its old trigger (and the gateway starts).
      RAISE WARNING 'webhook gateway: update trigger of %.% not replaced: %', installed.nspname, installed.relname, SQLERRM;
    END;
  END LOOP;
END
$$;
