--- collab.nvim: Neovim side of collab-ls (real-time collaborative editing).
---
--- Starts `collab-ls --share` or `collab-ls --join URL` as a language server
--- for the current project and attaches it to every file buffer under the
--- project root. No dependencies beyond Neovim 0.11+ (tested with 0.12).
---
--- ```lua
--- require('collab').setup({ cmd = { 'collab-ls' }, name = nil, debounce = 0 })
--- ```
---
--- `language_server = { 'pylsp' }` makes `:CollabShare` share that language
--- server with the guests (`collab-ls --share ... -- pylsp`): the host's editor
--- and every guest get its hover, definition, completion and the rest.
---
--- Commands (defined by plugin/collab.lua): `:CollabShare [relay-url]`,
--- `:CollabJoin {url} [dir]`, `:CollabStatus`, `:CollabStop`, `:CollabPeers`,
--- `:CollabFollow {name}`, `:CollabUnfollow`, `:CollabChat {text}`.
---
--- In shared buffers `u` and `<C-r>` run collab.undo / collab.redo (your own
--- edits only; `map_undo = false` keeps Vim's undo); yanks are shared with the
--- other Neovims (`$/collab/register`; `share_registers = false` to stop);
--- `open_with_peers = true` opens the shared files peers open.
---
--- Presence: the cursor and selection of this Neovim go to collab-ls as
--- `$/collab/cursor` (on CursorMoved, CursorMovedI, ModeChanged, BufEnter;
--- at most one per `cursor_interval` ms); the peers come back as
--- `$/collab/peers` and are drawn with extmarks in namespace `collab_peers`:
--- a coloured block on the peer's cursor (highlight `CollabPeerCursor_RRGGBB`),
--- its selection (`CollabPeerSelection_RRGGBB`) and its name at the end of
--- the line (`CollabPeerLabel_RRGGBB`).
---
--- Why a custom `workspace/applyEdit` handler: collab-ls sends peers' edits
--- gated by the document version Neovim last reported. Stock Neovim skips an
--- edit whose version is stale but still answers `applied: true` (and prints
--- "Buffer ... newer than edits."), so the server has to guess. This handler
--- answers honestly: it flushes pending `didChange` notifications, then
--- applies the edit only if its version is exactly the one Neovim reported in
--- the last `didOpen`/`didChange` (`vim.lsp.util.buf_versions`, which follows
--- text changes only: `:w` bumps `b:changedtick` but not this), and otherwise
--- answers `applied: false` so collab-ls rebases the edit and sends it again.
--- It also applies an insertion after the last line as exactly that text
--- (apply_text_edits would add one empty line too).

local M = {}

local NAME = 'collab-ls'

--- @class collab.Config
--- @field cmd string[] command that runs collab-ls (extra arguments allowed)
--- @field name string? your name in the session (`--name`); default: OS user
--- @field debounce integer `flags.debounce_text_changes` in ms (0: send at once)
--- @field cursor_interval integer ms between two cursor reports to collab-ls
--- @field open_with_peers boolean open (in the background) the shared files peers open
--- @field share_registers boolean share yanks with the other Neovims of the session
--- @field map_undo boolean map `u` / `<C-r>` to collab.undo / collab.redo in shared buffers
--- @field language_server string[]|false|nil with :CollabShare, the language server to share (`-- CMD...`)
M.config = {
  cmd = { 'collab-ls' },
  name = nil,
  debounce = 0,
  cursor_interval = 50,
  open_with_peers = false,
  share_registers = true,
  map_undo = true,
  language_server = nil,
}

local ns = vim.api.nvim_create_namespace('collab_peers')

local state = {
  client_id = nil, --- @type integer?
  root = nil, --- @type string?
  role = nil, --- @type 'host'|'guest'|nil
  url = nil, --- @type string?
  augroup = nil, --- @type integer?
  last_shown = nil, --- @type string? last window/showMessage text (to avoid saying it twice)
  peers = {}, --- @type table[] last `$/collab/peers` list
  chat = {}, --- @type table[] chat messages received (`$/collab/chat`)
  cursor_pending = false,
  marked = {}, --- @type table<integer, true> buffers with peer extmarks
  mapped = {}, --- @type table<integer, true> buffers with the undo/redo maps
}

--- A language server command: a non-empty list of non-empty strings.
local function is_command(value)
  if type(value) ~= 'table' or not vim.islist(value) or #value == 0 then
    return false
  end
  for _, arg in ipairs(value) do
    if type(arg) ~= 'string' or arg == '' then
      return false
    end
  end
  return true
end

--- @param opts collab.Config?
function M.setup(opts)
  opts = vim.deepcopy(opts or {})
  local ls = opts.language_server
  if type(ls) == 'string' then
    ls = { ls }
  end
  if ls ~= nil and ls ~= false and not is_command(ls) then
    vim.notify(
      "collab: setup: language_server must be a command like { 'pylsp' }; ignored",
      vim.log.levels.WARN,
      { title = 'collab' }
    )
    ls = nil -- keep what was set before
  end
  opts.language_server = ls
  M.config = vim.tbl_extend('force', M.config, opts)
end

local function notify(msg, level)
  vim.notify(msg, level or vim.log.levels.INFO, { title = 'collab' })
end

--- The running collab-ls client, if any.
--- @return vim.lsp.Client?
function M.client()
  local client = state.client_id and vim.lsp.get_client_by_id(state.client_id)
  if client and not client:is_stopped() then
    return client
  end
  return nil
end

--- Project root: the git root of the current file, else the working directory.
--- @return string
local function project_root()
  local root = vim.fs.root(0, '.git') or vim.fn.getcwd()
  return vim.fs.normalize(vim.fn.fnamemodify(root, ':p'))
end

--- Is `bufnr` a normal file buffer under the shared root?
local function shareable(bufnr, root)
  if not vim.api.nvim_buf_is_loaded(bufnr) or vim.bo[bufnr].buftype ~= '' then
    return false
  end
  local name = vim.api.nvim_buf_get_name(bufnr)
  if name == '' then
    return false
  end
  local rel = vim.fs.relpath(root, vim.fs.normalize(vim.fn.fnamemodify(name, ':p')))
  return rel ~= nil and rel ~= '.'
end

local function attach(bufnr)
  local client = M.client()
  if client and state.root and shareable(bufnr, state.root) then
    vim.lsp.buf_attach_client(bufnr, client.id)
  end
end

--- Send the buffer's debounced `didChange` now, if any.
local function flush(client, bufnr)
  local ok, changetracking = pcall(require, 'vim.lsp._changetracking')
  if ok and changetracking.flush then
    changetracking.flush(client, bufnr)
  end
end

--- Separate insertions at the end of the buffer (line == line count: after the
--- final newline) from the other edits. apply_text_edits turns those into
--- nvim_buf_set_lines with every line of the text, so inserting "abc\n" there
--- adds "abc" *and* an empty line: not the text collab-ls asked for.
--- @return lsp.TextEdit[] others, string appended text (in order)
local function split_appends(bufnr, edits)
  local count = vim.api.nvim_buf_line_count(bufnr)
  local others, appended = {}, {}
  for _, e in ipairs(edits) do
    if e.range.start.line >= count and e.range['end'].line >= count then
      appended[#appended + 1] = e.newText
    else
      others[#others + 1] = e
    end
  end
  return others, table.concat(appended)
end

--- Append `text` after the last line, as the text (not one more line) says.
local function append_lines(bufnr, text)
  text = text:gsub('\r\n?', '\n')
  if vim.endswith(text, '\n') then
    text = text:sub(1, -2)
  end
  vim.api.nvim_buf_set_lines(bufnr, -1, -1, true, vim.split(text, '\n', { plain = true }))
end

--- The honest `workspace/applyEdit` handler (see the module comment).
---
--- Every versioned `TextDocumentEdit` is checked before any is applied, so an
--- edit is applied whole or not at all.
--- @param params lsp.ApplyWorkspaceEditParams
--- @param ctx lsp.HandlerContext
--- @return lsp.ApplyWorkspaceEditResult
function M.apply_edit(_, params, ctx)
  local client = vim.lsp.get_client_by_id(ctx.client_id)
  if not client then
    return { applied = false, failureReason = 'client is gone' }
  end
  local edit = params.edit or {}
  local plan = {} --- @type {bufnr: integer, edits: lsp.TextEdit[]}[]
  if edit.documentChanges then
    for _, change in ipairs(edit.documentChanges) do
      if change.kind then
        return { applied = false, failureReason = 'unsupported resource operation ' .. change.kind }
      end
      local bufnr = vim.uri_to_bufnr(change.textDocument.uri)
      if not vim.api.nvim_buf_is_loaded(bufnr) then
        -- A file with no buffer yet: load it (autocmds attach it if shared).
        vim.fn.bufload(bufnr)
      end
      local version = change.textDocument.version
      if version ~= nil and version ~= vim.NIL then
        -- Pending (debounced) changes bump buf_versions before they are sent,
        -- so after the flush a mismatch also catches them.
        flush(client, bufnr)
        if not vim.lsp.buf_is_attached(bufnr, client.id) then
          return { applied = false, failureReason = 'document not open in this editor' }
        end
        local current = vim.lsp.util.buf_versions[bufnr]
        if current ~= version then
          return {
            applied = false,
            failureReason = ('stale version: edit for %d, buffer at %d'):format(version, current),
          }
        end
      end
      plan[#plan + 1] = { bufnr = bufnr, edits = change.edits }
    end
  elseif edit.changes then
    for uri, edits in pairs(edit.changes) do
      plan[#plan + 1] = { bufnr = vim.uri_to_bufnr(uri), edits = edits }
    end
  end
  for _, item in ipairs(plan) do
    local edits, append = split_appends(item.bufnr, item.edits)
    -- nvim_buf_set_text (used by apply_text_edits) keeps cursors with their text.
    local ok, err = pcall(
      vim.lsp.util.apply_text_edits,
      edits,
      item.bufnr,
      client.offset_encoding,
      edit.changeAnnotations
    )
    if ok and append ~= '' then
      ok, err = pcall(append_lines, item.bufnr, append)
    end
    if not ok then
      return { applied = false, failureReason = tostring(err) }
    end
    -- Send the echo now, before the response, even with a debounce.
    flush(client, item.bufnr)
  end
  return { applied = true }
end

local function on_show_message(err, params, ctx)
  state.last_shown = params and params.message
  return vim.lsp.handlers['window/showMessage'](err, params, ctx)
end

--- `$/collab/status`: {connected, message, url}, on every change of the relay link.
local function on_status(_, params)
  if not params then
    return
  end
  if params.url and params.url ~= vim.NIL then
    state.url = params.url
  end
  -- collab-ls also sends most of these as window/showMessage: say it once.
  if params.message and params.message ~= state.last_shown then
    notify(params.message, params.connected and vim.log.levels.INFO or vim.log.levels.WARN)
  end
  state.last_shown = nil
end

--- Run a `workspace/executeCommand` of collab-ls; `callback(err, result)`.
local function execute(client, command, callback, arguments)
  client:request(
    'workspace/executeCommand',
    { command = command, arguments = arguments or {} },
    callback
  )
end

-- ------------------------------------------------------------------ presence

--- Highlight groups of a peer colour ('#rrggbb'): cursor, selection, label.
local function peer_groups(colour)
  local hex = colour:gsub('#', ''):upper()
  if not hex:match('^%x%x%x%x%x%x$') then
    hex = '888888'
  end
  local cursor = 'CollabPeerCursor_' .. hex
  if vim.fn.hlexists(cursor) == 0 then
    local r, g, b = tonumber(hex:sub(1, 2), 16), tonumber(hex:sub(3, 4), 16), tonumber(hex:sub(5, 6), 16)
    -- The selection: the colour mixed into a dark grey, so text stays readable.
    local sel = ('#%02x%02x%02x'):format(
      math.floor(r * 0.35 + 0x30 * 0.65),
      math.floor(g * 0.35 + 0x30 * 0.65),
      math.floor(b * 0.35 + 0x30 * 0.65)
    )
    vim.api.nvim_set_hl(0, cursor, { bg = '#' .. hex, fg = '#ffffff', default = true })
    vim.api.nvim_set_hl(0, 'CollabPeerSelection_' .. hex, { bg = sel, default = true })
    vim.api.nvim_set_hl(
      0,
      'CollabPeerLabel_' .. hex,
      { bg = '#' .. hex, fg = '#ffffff', bold = true, default = true }
    )
  end
  return cursor, 'CollabPeerSelection_' .. hex, 'CollabPeerLabel_' .. hex
end

--- An LSP position to (row, byte col) in `bufnr`, clamped to the buffer.
local function to_byte(bufnr, pos, encoding)
  local count = vim.api.nvim_buf_line_count(bufnr)
  local row = math.min(pos.line, count - 1)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  if pos.line >= count then
    return row, #line
  end
  local ok, col = pcall(vim.str_byteindex, line, encoding, pos.character, false)
  if not ok then
    col = #line
  end
  return row, math.min(col, #line), line
end

--- Draw `peers` (a `$/collab/peers` list) in every loaded buffer.
function M.render_peers(peers)
  for bufnr in pairs(state.marked) do
    if vim.api.nvim_buf_is_valid(bufnr) then
      vim.api.nvim_buf_clear_namespace(bufnr, ns, 0, -1)
    end
  end
  state.marked = {}
  local client = M.client()
  local encoding = client and client.offset_encoding or 'utf-16'
  for _, peer in ipairs(peers or {}) do
    local uri = peer.uri
    if uri and uri ~= vim.NIL and peer.cursor and peer.cursor ~= vim.NIL then
      local bufnr = vim.uri_to_bufnr(uri)
      if vim.api.nvim_buf_is_loaded(bufnr) then
        state.marked[bufnr] = true
        local hl_cursor, hl_sel, hl_label = peer_groups(peer.colour or '#888888')
        for _, r in ipairs(peer.ranges or {}) do
          local sr, sc = to_byte(bufnr, r.start, encoding)
          local er, ec = to_byte(bufnr, r['end'], encoding)
          if sr ~= er or sc ~= ec then
            pcall(vim.api.nvim_buf_set_extmark, bufnr, ns, sr, sc, {
              end_row = er,
              end_col = ec,
              hl_group = hl_sel,
              priority = 150,
            })
          end
        end
        local row, col, line = to_byte(bufnr, peer.cursor, encoding)
        line = line or ''
        local opts = { priority = 200, hl_group = hl_cursor }
        if col < #line then
          local char = vim.fn.strpart(line, col, 1, true)
          opts.end_col = col + math.max(#char, 1)
        else
          opts.hl_group = nil
          opts.virt_text = { { ' ', hl_cursor } }
          opts.virt_text_pos = 'overlay'
        end
        pcall(vim.api.nvim_buf_set_extmark, bufnr, ns, row, col, opts)
        pcall(vim.api.nvim_buf_set_extmark, bufnr, ns, row, 0, {
          virt_text = { { ' ' .. peer.name .. ' ', hl_label } },
          virt_text_pos = 'eol',
          priority = 200,
        })
      end
    end
  end
end

--- The peers as collab-ls last reported them (`$/collab/peers`).
function M.peers()
  return state.peers
end

local function on_peers(_, params)
  state.peers = params and params.peers or {}
  M.render_peers(state.peers)
end

local function on_chat(_, params)
  if params then
    -- Others' messages also arrive as window/showMessage, which shows them.
    state.chat[#state.chat + 1] = params
  end
end

--- The chat messages received in this session.
function M.chat_log()
  return state.chat
end

--- An LSP position of (row 0-based, byte col) in `bufnr`.
local function lsp_position(bufnr, row, col, encoding)
  local line = vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
  col = math.min(col, #line)
  local ok, character = pcall(vim.str_utfindex, line, encoding, col, false)
  return { line = row, character = ok and character or col }
end

--- Send this window's cursor and selection as `$/collab/cursor`.
function M.send_cursor()
  state.cursor_pending = false
  local client = M.client()
  if not client or not client.initialized then
    return
  end
  local bufnr = vim.api.nvim_get_current_buf()
  if not vim.lsp.buf_is_attached(bufnr, client.id) then
    return
  end
  local cur = vim.api.nvim_win_get_cursor(0)
  local head = lsp_position(bufnr, cur[1] - 1, cur[2], client.offset_encoding)
  local anchor = head
  local mode = vim.api.nvim_get_mode().mode
  if mode:match('^[vV\22]') then
    local v = vim.fn.getpos('v')
    anchor = lsp_position(bufnr, v[2] - 1, v[3] - 1, client.offset_encoding)
  end
  client:notify('$/collab/cursor', {
    uri = vim.uri_from_bufnr(bufnr),
    ranges = { { start = anchor, ['end'] = head } },
  })
end

local function cursor_moved()
  if not state.cursor_pending then
    state.cursor_pending = true
    vim.defer_fn(M.send_cursor, M.config.cursor_interval)
  end
end

-- ------------------------------------------------- undo, registers (issue 3)

--- `u` / `<C-r>` in a shared buffer: undo / redo this peer's own edits only
--- (`collab.undo` / `collab.redo`); the change comes back as an applyEdit.
--- @param redo boolean?
function M.undo(redo)
  local client = M.client()
  local bufnr = vim.api.nvim_get_current_buf()
  if not client or not vim.lsp.buf_is_attached(bufnr, client.id) then
    vim.cmd.normal({ args = { redo and '\18' or 'u' }, bang = true })
    return
  end
  flush(client, bufnr) -- the edit to undo must have reached collab-ls
  local command = redo and 'collab.redo' or 'collab.undo'
  execute(client, command, function(err, result)
    if err then
      notify('collab: ' .. (err.message or command .. ' failed'), vim.log.levels.WARN)
    elseif type(result) == 'table' and result.done == false then
      notify(redo and 'collab: nothing of yours to redo' or 'collab: nothing of yours to undo')
    end
  end, { vim.uri_from_bufnr(bufnr) })
end

local function map_undo(bufnr)
  if not M.config.map_undo or state.mapped[bufnr] then
    return
  end
  state.mapped[bufnr] = true
  local opts = { buffer = bufnr, desc = 'collab-ls: undo your own edits only' }
  vim.keymap.set('n', 'u', function()
    for _ = 1, vim.v.count1 do
      M.undo(false)
    end
  end, opts)
  opts.desc = 'collab-ls: redo your own edits'
  vim.keymap.set('n', '<C-r>', function()
    for _ = 1, vim.v.count1 do
      M.undo(true)
    end
  end, opts)
end

local function unmap_undo()
  for bufnr in pairs(state.mapped) do
    if vim.api.nvim_buf_is_valid(bufnr) then
      pcall(vim.keymap.del, 'n', 'u', { buffer = bufnr })
      pcall(vim.keymap.del, 'n', '<C-r>', { buffer = bufnr })
    end
  end
  state.mapped = {}
end

--- TextYankPost: send a yank to collab-ls as `$/collab/register`.
local function yanked()
  local ev = vim.v.event
  local client = M.client()
  if not client or not client.initialized or ev.operator ~= 'y' then
    return
  end
  local reg = ev.regname == '' and '"' or ev.regname:lower()
  if reg == '+' or reg == '*' or reg == '_' then
    return -- the clipboard stays on this machine
  end
  vim.schedule(function() -- the register is complete after the yank (`"A` appends)
    client:notify('$/collab/register', {
      register = reg,
      contents = vim.fn.getreg(reg, 1, true),
      regtype = vim.fn.getregtype(reg),
    })
  end)
end

--- `$/collab/register` from collab-ls: a peer yanked; set the same register here.
local function on_register(_, params)
  if M.config.share_registers and params and type(params.register) == 'string' then
    pcall(vim.fn.setreg, params.register, params.contents or {}, params.regtype or 'v')
  end
end

--- `:CollabPeers`: who is here.
function M.show_peers()
  local list, err = M.execute_sync('collab.peers')
  if not list then
    notify('collab: ' .. (err or 'no answer'), vim.log.levels.WARN)
    return
  end
  local lines = {}
  for _, p in ipairs(list) do
    local where = p.document ~= vim.NIL and p.document or '-'
    if p.cursor and p.cursor ~= vim.NIL then
      where = ('%s:%d'):format(where, p.cursor.line + 1)
    end
    lines[#lines + 1] = ('%s%s  %s'):format(p.name, p.self and ' (you)' or '', where)
  end
  notify('collab: here: ' .. table.concat(lines, '; '))
end

--- `:CollabFollow {name}`.
function M.follow(name)
  local result, err = M.execute_sync_args('collab.follow', { name })
  if not result then
    notify('collab: ' .. (err or 'no answer'), vim.log.levels.WARN)
  else
    notify('collab: following ' .. name)
  end
end

--- `:CollabUnfollow`.
function M.unfollow()
  M.execute_sync('collab.unfollow')
  notify('collab: not following anyone')
end

--- `:CollabChat {text}` (without text: the messages so far).
function M.chat(text)
  if not text or text == '' then
    local lines = {}
    for _, m in ipairs(state.chat) do
      lines[#lines + 1] = m.name .. ': ' .. m.text
    end
    notify(#lines > 0 and table.concat(lines, '\n') or 'collab: no chat messages yet')
    return
  end
  local _, err = M.execute_sync_args('collab.chat', { text })
  if err then
    notify('collab: ' .. err, vim.log.levels.WARN)
  end
end

--- Run a `workspace/executeCommand` synchronously.
--- @param command string
--- @param timeout_ms integer?
--- @return any result, string? error
function M.execute_sync(command, timeout_ms)
  return M.execute_sync_args(command, {}, timeout_ms)
end

--- Run a `workspace/executeCommand` with arguments, synchronously.
--- @param command string
--- @param arguments any[]
--- @param timeout_ms integer?
--- @return any result, string? error
function M.execute_sync_args(command, arguments, timeout_ms)
  local client = M.client()
  if not client then
    return nil, 'collab-ls is not running'
  end
  if not client.initialized then
    return nil, 'collab-ls is starting'
  end
  local res, err = client:request_sync(
    'workspace/executeCommand',
    { command = command, arguments = arguments },
    timeout_ms or 2000
  )
  if not res then
    return nil, err or 'no answer'
  end
  if res.err then
    return nil, res.err.message or vim.inspect(res.err)
  end
  return res.result, nil
end

--- The session status as collab-ls reports it (`collab.status`), or nil and an error.
--- @param timeout_ms integer?
function M.status(timeout_ms)
  return M.execute_sync('collab.status', timeout_ms)
end

--- The join URL, once known.
--- @return string?
function M.url()
  return state.url
end

local function announce_url(url)
  state.url = url
  vim.g.collab_url = url
  vim.fn.setreg('"', url)
  if vim.fn.has('clipboard') == 1 then
    pcall(vim.fn.setreg, '+', url)
  end
  notify(('collab: sharing %s. Others join with  :CollabJoin %s  (URL copied)'):format(
    state.root,
    url
  ))
end

--- Ask collab-ls for the join URL until it has one (the relay starts after `initialized`).
local function fetch_url(tries)
  local client = M.client()
  if not client or tries <= 0 then
    if client then
      notify('collab: collab-ls did not report a join URL', vim.log.levels.WARN)
    end
    return
  end
  local function retry()
    vim.defer_fn(function()
      fetch_url(tries - 1)
    end, 100)
  end
  if not client.initialized then
    return retry()
  end
  execute(client, 'collab.shareUrl', function(err, result)
    if not err and type(result) == 'string' then
      announce_url(result)
    else
      retry()
    end
  end)
end

--- Start collab-ls for the current project (or `root`).
--- @param args string[] mode arguments (`--share` / `--join URL`)
--- @param role 'host'|'guest'
--- @param root string? the shared root (default: the current project's)
local function start(args, role, root)
  if M.client() then
    notify(
      ('collab: already %s %s; :CollabStop first'):format(
        state.role == 'host' and 'sharing' or 'joined to',
        state.url or state.root
      ),
      vim.log.levels.WARN
    )
    return nil
  end
  root = root or project_root()
  local cmd = vim.list_extend(vim.deepcopy(M.config.cmd), args)
  if M.config.name then
    vim.list_extend(cmd, { '--name', M.config.name })
  end
  if role == 'host' and M.config.language_server then
    -- Last: everything after `--` is the language server's command line.
    vim.list_extend(cmd, { '--' })
    vim.list_extend(cmd, vim.deepcopy(M.config.language_server))
  end
  local client_id = vim.lsp.start({
    name = NAME,
    cmd = cmd,
    root_dir = root,
    flags = { debounce_text_changes = M.config.debounce },
    -- Our applyEdit handler answers honestly (applied = false when stale), so
    -- collab-ls may trust `applied = true`.
    init_options = { honestApplyEdit = true, openWithPeers = M.config.open_with_peers },
    handlers = {
      ['workspace/applyEdit'] = M.apply_edit,
      ['window/showMessage'] = on_show_message,
      ['$/collab/status'] = on_status,
      ['$/collab/peers'] = on_peers,
      ['$/collab/chat'] = on_chat,
      ['$/collab/register'] = on_register,
    },
    on_exit = function(code, signal, id)
      vim.schedule(function()
        if state.client_id == id then
          M.reset()
          if code ~= 0 then
            notify(
              ('collab: collab-ls exited (code %d, signal %d)'):format(code, signal),
              vim.log.levels.WARN
            )
          end
        end
      end)
    end,
  }, { attach = false, reuse_client = function() return false end })
  if not client_id then
    return nil
  end
  state.client_id, state.root, state.role, state.url = client_id, root, role, nil
  state.augroup = vim.api.nvim_create_augroup('collab', { clear = true })
  vim.api.nvim_create_autocmd({ 'BufReadPost', 'BufNewFile' }, {
    group = state.augroup,
    callback = function(ev)
      attach(ev.buf)
    end,
  })
  vim.api.nvim_create_autocmd({ 'CursorMoved', 'CursorMovedI', 'ModeChanged', 'BufEnter' }, {
    group = state.augroup,
    callback = cursor_moved,
  })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = state.augroup,
    callback = function(ev)
      if ev.data and ev.data.client_id == state.client_id then
        map_undo(ev.buf)
      end
    end,
  })
  if M.config.share_registers then
    vim.api.nvim_create_autocmd('TextYankPost', { group = state.augroup, callback = yanked })
  end
  for _, bufnr in ipairs(vim.api.nvim_list_bufs()) do
    attach(bufnr)
  end
  return client_id
end

--- `:CollabShare [relay-url]`: host a session for the current project.
--- @param relay_url string?
--- @return integer? client_id
function M.share(relay_url)
  local args = { '--share' }
  if relay_url and relay_url ~= '' then
    vim.list_extend(args, { '--relay', relay_url })
  end
  local id = start(args, 'host')
  if id then
    fetch_url(300)
  end
  return id
end

--- `:CollabJoin {url} [dir]`: join a session with the host's URL.
--- With `dir`, join with no checkout of the project: collab-ls mirrors the
--- host's project into `dir` (created if needed), which is the shared root.
--- @param url string
--- @param dir string?
--- @return integer? client_id
function M.join(url, dir)
  if not url or url == '' then
    notify('collab: :CollabJoin needs the URL the host shared', vim.log.levels.ERROR)
    return nil
  end
  local args, root = { '--join', url }, nil
  if dir and dir ~= '' then
    root = vim.fs.normalize(vim.fn.fnamemodify(vim.fn.expand(dir), ':p'))
    -- collab-ls would create it, but the shared root must exist to be the client's.
    vim.fn.mkdir(root, 'p')
    vim.list_extend(args, { '--workspace', root })
  end
  local id = start(args, 'guest', root)
  if id then
    state.url = url
  end
  return id
end

--- `:CollabStatus`: show the session status.
function M.show_status()
  local client = M.client()
  if not client then
    notify('collab: not running (:CollabShare or :CollabJoin {url})')
    return
  end
  execute(client, 'collab.status', function(err, s)
    if err or type(s) ~= 'table' then
      local why = err and err.message or 'collab-ls is starting'
      notify('collab: no status: ' .. why, vim.log.levels.WARN)
      return
    end
    notify(
      ('collab: %s, %s, url %s, root %s, documents: %s'):format(
        s.role,
        s.connected and 'connected' or 'not connected',
        s.url ~= vim.NIL and s.url or '?',
        state.root,
        table.concat(s.documents or {}, ', ')
      )
    )
  end)
end

function M.reset()
  if state.augroup then
    pcall(vim.api.nvim_del_augroup_by_id, state.augroup)
  end
  M.render_peers({})
  unmap_undo()
  state.peers, state.chat = {}, {}
  state.client_id, state.root, state.role, state.url, state.augroup = nil, nil, nil, nil, nil
  vim.g.collab_url = nil
end

--- `:CollabStop`: stop collab-ls (the host's stop ends the session for everyone).
function M.stop()
  local client = M.client()
  M.reset()
  if client then
    client:stop()
    notify('collab: stopped')
  end
end

return M
