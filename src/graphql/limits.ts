import {
  GraphQLError,
  Kind,
  parse,
  type ASTVisitor,
  type FragmentDefinitionNode,
  type SelectionSetNode,
  type ValidationContext,
} from 'graphql';
import type { Plugin } from 'graphql-yoga';

export interface QueryLimits {
  /** Deepest field nesting (GraphiQL's own introspection query reaches 13). */
  maxDepth: number;
  /** Fields selected in one operation, counted after fragments are expanded. */
  maxFields: number;
  maxAliases: number;
  /** Lexical tokens in a document; bounds parsing work before anything else runs. */
  maxTokens: number;
}

export const DEFAULT_QUERY_LIMITS: QueryLimits = { maxDepth: 15, maxFields: 1000, maxAliases: 30, maxTokens: 5000 };

interface Measure {
  depth: number;
  fields: number;
  aliases: number;
}

function measure(
  selectionSet: SelectionSetNode,
  fragments: Map<string, FragmentDefinitionNode>,
  depth: number,
  expanding: Set<string>,
  total: Measure,
): void {
  for (const selection of selectionSet.selections) {
    if (selection.kind === Kind.FIELD) {
      total.fields++;
      if (selection.alias) total.aliases++;
      total.depth = Math.max(total.depth, depth);
      if (selection.selectionSet) measure(selection.selectionSet, fragments, depth + 1, expanding, total);
    } else if (selection.kind === Kind.INLINE_FRAGMENT) {
      measure(selection.selectionSet, fragments, depth, expanding, total);
    } else {
      const fragment = fragments.get(selection.name.value);
      // Cycles are reported by graphql's own NoFragmentCycles rule; here they only must not loop.
      if (!fragment || expanding.has(fragment.name.value)) continue;
      expanding.add(fragment.name.value);
      measure(fragment.selectionSet, fragments, depth, expanding, total);
      expanding.delete(fragment.name.value);
    }
  }
}

/** A validation rule that refuses operations too deep, too wide or too aliased to be a real client's. */
export function queryLimitsRule(limits: QueryLimits) {
  return (context: ValidationContext): ASTVisitor => ({
    Document(document) {
      const fragments = new Map<string, FragmentDefinitionNode>();
      for (const definition of document.definitions) {
        if (definition.kind === Kind.FRAGMENT_DEFINITION) fragments.set(definition.name.value, definition);
      }
      for (const definition of document.definitions) {
        if (definition.kind !== Kind.OPERATION_DEFINITION) continue;
        const total: Measure = { depth: 0, fields: 0, aliases: 0 };
        measure(definition.selectionSet, fragments, 1, new Set(), total);
        const problems = [
          total.depth > limits.maxDepth && `nests ${total.depth} levels deep (at most ${limits.maxDepth})`,
          total.fields > limits.maxFields && `selects ${total.fields} fields (at most ${limits.maxFields})`,
          total.aliases > limits.maxAliases && `uses ${total.aliases} aliases (at most ${limits.maxAliases})`,
        ].filter(Boolean);
        if (problems.length > 0) {
          context.reportError(new GraphQLError(`The operation ${problems.join(', ')}`, { nodes: [definition] }));
        }
      }
      return false;
    },
  });
}

/** Applies the limits to every operation served by yoga. */
export function useQueryLimits(limits: QueryLimits = DEFAULT_QUERY_LIMITS): Plugin {
  return {
    onParse({ setParseFn }) {
      setParseFn((source, options) => parse(source, { ...options, maxTokens: limits.maxTokens }));
    },
    onValidate({ addValidationRule }) {
      addValidationRule(queryLimitsRule(limits));
    },
  };
}
