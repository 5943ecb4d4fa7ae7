import { renderGraphiQL, type GraphiQLOptions } from 'graphql-yoga';

/**
 * Browsers cannot set headers on a WebSocket, and yoga's GraphiQL sends its Headers pane only
 * with HTTP requests. This runs before GraphiQL starts and gives its WebSocket client the
 * Headers pane (as GraphiQL stores it) as `connectionParams`, read each time it connects: the
 * token a user pastes there authenticates subscriptions too.
 */
const HEADERS_AS_CONNECTION_PARAMS = `<script>
(function () {
  function storedHeaders() {
    try {
      var text = localStorage.getItem('graphiql:headers');
      if (!text) {
        var state = JSON.parse(localStorage.getItem('graphiql:tabState') || 'null');
        var tab = state && state.tabs && state.tabs[state.activeTabIndex];
        text = tab && tab.headers;
      }
      var headers = JSON.parse(text || '{}');
      return headers && typeof headers === 'object' ? headers : {};
    } catch (error) {
      return {};
    }
  }
  var render = YogaGraphiQL.renderYogaGraphiQL;
  YogaGraphiQL.renderYogaGraphiQL = function (root, options) {
    return render(root, Object.assign({}, options, { connectionParams: storedHeaders }));
  };
})();
</script>`;

/** yoga's GraphiQL page, with subscriptions over graphql-ws authenticated by the Headers pane. */
export function renderGatewayGraphiQL(options: GraphiQLOptions): string {
  const page = renderGraphiQL(options);
  if (!page.includes('</body>')) throw new Error('GraphiQL page without </body>: cannot add the connectionParams script');
  return page.replace('</body>', `${HEADERS_AS_CONNECTION_PARAMS}</body>`);
}
