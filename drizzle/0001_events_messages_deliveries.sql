CREATE TABLE "webhook_gateway"."webhook_events" (
	"id" text PRIMARY KEY NOT NULL,
	"webhook_id" text NOT NULL,
	"event_type" text NOT NULL,
	"object_name" text NOT NULL,
	"object_fields" text[] DEFAULT '{}' NOT NULL,
	"event_sources" text[] DEFAULT '{}' NOT NULL,
	"custom_payload_fields" text[] DEFAULT '{}' NOT NULL,
	"custom_payload_template" text DEFAULT '' NOT NULL,
	"enabled" boolean DEFAULT true NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"created_by" text NOT NULL,
	"modified_at" timestamp with time zone DEFAULT now() NOT NULL,
	"modified_by" text NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."dispatcher_state" (
	"singleton" boolean PRIMARY KEY DEFAULT true NOT NULL,
	"idle" boolean DEFAULT true NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."outbox" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_gateway"."outbox_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"operation" text NOT NULL,
	"table_name" text NOT NULL,
	"old_row" json,
	"new_row" json,
	"changed_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."messages" (
	"id" uuid PRIMARY KEY NOT NULL,
	"seq" bigint GENERATED ALWAYS AS IDENTITY (sequence name "webhook_gateway"."messages_seq_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"webhook_id" text NOT NULL,
	"event_id" text NOT NULL,
	"event_type" text NOT NULL,
	"object_name" text NOT NULL,
	"body" text NOT NULL,
	"status" text DEFAULT 'PENDING' NOT NULL,
	"event_date" timestamp with time zone NOT NULL,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."deliveries" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_gateway"."deliveries_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"message_id" uuid NOT NULL,
	"webhook_id" text NOT NULL,
	"url" text NOT NULL,
	"status" text DEFAULT 'QUEUED' NOT NULL,
	"attempts" integer DEFAULT 0 NOT NULL,
	"generation" integer DEFAULT 0 NOT NULL,
	"queued" boolean DEFAULT false NOT NULL,
	"next_attempt_at" timestamp with time zone DEFAULT now() NOT NULL,
	"last_http_status" integer,
	"last_error" text,
	"created_at" timestamp with time zone DEFAULT now() NOT NULL,
	"updated_at" timestamp with time zone DEFAULT now() NOT NULL
);
--> statement-breakpoint
CREATE TABLE "webhook_gateway"."delivery_attempts" (
	"id" bigint PRIMARY KEY GENERATED ALWAYS AS IDENTITY (sequence name "webhook_gateway"."delivery_attempts_id_seq" INCREMENT BY 1 MINVALUE 1 MAXVALUE 9223372036854775807 START WITH 1 CACHE 1),
	"message_id" uuid NOT NULL,
	"webhook_id" text NOT NULL,
	"event_id" text NOT NULL,
	"url" text NOT NULL,
	"attempt" integer NOT NULL,
	"attempted_at" timestamp with time zone NOT NULL,
	"succeeded" boolean NOT NULL,
	"http_status" integer,
	"duration_ms" integer NOT NULL,
	"error" text,
	"response_body" text
);
--> statement-breakpoint
ALTER TABLE "webhook_gateway"."webhook_events" ADD CONSTRAINT "webhook_events_webhook_id_webhooks_id_fk" FOREIGN KEY ("webhook_id") REFERENCES "webhook_gateway"."webhooks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_gateway"."messages" ADD CONSTRAINT "messages_webhook_id_webhooks_id_fk" FOREIGN KEY ("webhook_id") REFERENCES "webhook_gateway"."webhooks"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_gateway"."deliveries" ADD CONSTRAINT "deliveries_message_id_messages_id_fk" FOREIGN KEY ("message_id") REFERENCES "webhook_gateway"."messages"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
ALTER TABLE "webhook_gateway"."delivery_attempts" ADD CONSTRAINT "delivery_attempts_message_id_messages_id_fk" FOREIGN KEY ("message_id") REFERENCES "webhook_gateway"."messages"("id") ON DELETE cascade ON UPDATE no action;--> statement-breakpoint
CREATE INDEX "webhook_events_webhook_idx" ON "webhook_gateway"."webhook_events" USING btree ("webhook_id");--> statement-breakpoint
CREATE INDEX "webhook_events_object_idx" ON "webhook_gateway"."webhook_events" USING btree ("object_name");--> statement-breakpoint
CREATE INDEX "messages_webhook_seq_idx" ON "webhook_gateway"."messages" USING btree ("webhook_id","seq");--> statement-breakpoint
CREATE INDEX "messages_event_idx" ON "webhook_gateway"."messages" USING btree ("event_id","created_at");--> statement-breakpoint
CREATE INDEX "messages_created_idx" ON "webhook_gateway"."messages" USING btree ("created_at");--> statement-breakpoint
CREATE INDEX "deliveries_message_idx" ON "webhook_gateway"."deliveries" USING btree ("message_id");--> statement-breakpoint
CREATE INDEX "deliveries_unqueued_idx" ON "webhook_gateway"."deliveries" USING btree ("id") WHERE not "webhook_gateway"."deliveries"."queued";--> statement-breakpoint
CREATE INDEX "deliveries_unfinished_idx" ON "webhook_gateway"."deliveries" USING btree ("id") WHERE "webhook_gateway"."deliveries"."status" in ('QUEUED', 'SENDING', 'RETRY_SCHEDULED');--> statement-breakpoint
CREATE INDEX "delivery_attempts_message_idx" ON "webhook_gateway"."delivery_attempts" USING btree ("message_id");--> statement-breakpoint
CREATE INDEX "delivery_attempts_webhook_idx" ON "webhook_gateway"."delivery_attempts" USING btree ("webhook_id","attempted_at");--> statement-breakpoint
CREATE INDEX "delivery_attempts_event_idx" ON "webhook_gateway"."delivery_attempts" USING btree ("event_id","attempted_at");