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
--- Commands (defined by plugin/collab.lua): `:CollabShare [relay-url]`,
--- `:CollabJoin {url}`, `:CollabStatus`, `:CollabStop`.
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
M.config = { cmd = { 'collab-ls' }, name = nil, debounce = 0 }

local state = {
  client_id = nil, --- @type integer?
  root = nil, --- @type string?
  role = nil, --- @type 'host'|'guest'|nil
  url = nil, --- @type string?
  augroup = nil, --- @type integer?
  last_shown = nil, --- @type string? last window/showMessage text (to avoid saying it twice)
}

--- @param opts collab.Config?
function M.setup(opts)
  M.config = vim.tbl_extend('force', M.config, opts or {})
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
local function execute(client, command, callback)
  client:request('workspace/executeCommand', { command = command, arguments = {} }, callback)
end

--- Run a `workspace/executeCommand` synchronously.
--- @param command string
--- @param timeout_ms integer?
--- @return any result, string? error
function M.execute_sync(command, timeout_ms)
  local client = M.client()
  if not client then
    return nil, 'collab-ls is not running'
  end
  if not client.initialized then
    return nil, 'collab-ls is starting'
  end
  local res, err = client:request_sync(
    'workspace/executeCommand',
    { command = command, arguments = {} },
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

--- Start collab-ls for the current project.
--- @param args string[] mode arguments (`--share` / `--join URL`)
--- @param role 'host'|'guest'
local function start(args, role)
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
  local root = project_root()
  local cmd = vim.list_extend(vim.deepcopy(M.config.cmd), args)
  if M.config.name then
    vim.list_extend(cmd, { '--name', M.config.name })
  end
  local client_id = vim.lsp.start({
    name = NAME,
    cmd = cmd,
    root_dir = root,
    flags = { debounce_text_changes = M.config.debounce },
    -- Our applyEdit handler answers honestly (applied = false when stale), so
    -- collab-ls may trust `applied = true`.
    init_options = { honestApplyEdit = true },
    handlers = {
      ['workspace/applyEdit'] = M.apply_edit,
      ['window/showMessage'] = on_show_message,
      ['$/collab/status'] = on_status,
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

--- `:CollabJoin {url}`: join a session with the host's URL.
--- @param url string
--- @return integer? client_id
function M.join(url)
  if not url or url == '' then
    notify('collab: :CollabJoin needs the URL the host shared', vim.log.levels.ERROR)
    return nil
  end
  local id = start({ '--join', url }, 'guest')
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
