" collab.vim: Vim side of collab-ls, with nothing but Vim 9.0's built-ins.
"
" collab-ls runs as a job in Vim's LSP channel mode (job_start with in_mode
" and out_mode 'lsp'; ch_sendexpr for requests, notifications and responses).
" Every normal file buffer under the project root is opened with didOpen and
" followed with listener_add: Vim reports changes as line ranges, which are
" turned here into one incremental LSP change per listener call (the lines
" that changed, narrowed to the characters that changed), from a copy of the
" text as last reported (the "shadow").
"
" workspace/applyEdit is answered honestly: pending changes are flushed
" (listener_flush) first, an edit whose version is not the version last
" reported is refused with applied: false (collab-ls rebases it and sends it
" again), otherwise it is applied with setbufline/appendbufline/deletebufline
" and its echo is flushed as didChange before the answer. initializationOptions
" carry honestApplyEdit: true so collab-ls trusts applied: true.
"
" Positions: offers utf-32 and utf-8 (g:collab_position_encodings) and handles
" utf-16 too if the server picks it. Document text is the buffer's lines
" joined with "\n", plus a final "\n" when 'eol' is set (as Neovim does).
"
" Configuration (all optional):
"   g:collab_cmd                 command list, default ['collab-ls']
"   g:collab_name                your name in the session (--name)
"   g:collab_position_encodings  offered encodings, default ['utf-32', 'utf-8']
"   g:collab_language_server     with :CollabShare, the language server to share
"                                with the guests, e.g. ['pylsp']: appended last,
"                                as `-- pylsp` (ignored by :CollabJoin)
"   g:collab_set_omnifunc        0: leave 'omnifunc' alone (default: collab#complete)
"   g:collab_complete_timeout    ms completion may take, default 2000
"   g:collab_map_keys            1: K, gd, gr in shared buffers (or a Dict)
"
" The language features (hover, definition, references, diagnostics,
" completion, rename, formatting) are in autoload/collab/language.vim.
"
" :CollabJoin {url} [dir]: with dir, `--workspace dir` (a guest with no
" checkout: the host's project is mirrored into dir, which is then the root).

let s:job = v:null
let s:ch = v:null
let s:root = ''
let s:role = ''
let s:url = ''
let s:ready = 0
let s:stopping = 0
let s:encoding = 'utf-16'
" bufnr -> {uri, version, lines (shadow), eol}
let s:docs = {}
let s:messages = []
let s:stderr = []
let s:last_shown = ''
let s:peer_types = {}
let s:peers = []
let s:cursor_timer = -1
let s:following = ''

" ------------------------------------------------------------------ helpers

function! s:cfg(name, default) abort
  return get(g:, 'collab_' . a:name, a:default)
endfunction

function! s:say(msg, ...) abort
  let level = a:0 ? a:1 : 'info'
  call add(s:messages, a:msg)
  if len(s:messages) > 200
    call remove(s:messages, 0, 99)
  endif
  if level ==# 'error'
    echohl ErrorMsg
  elseif level ==# 'warn'
    echohl WarningMsg
  endif
  echomsg a:msg
  echohl None
endfunction

function! s:pct(s) abort
  return join(map(range(len(a:s)), 'printf("%%%02X", char2nr(a:s[v:val]))'), '')
endfunction

function! s:uri_from_path(path) abort
  let p = fnamemodify(a:path, ':p')
  return 'file://' . substitute(p, '[^A-Za-z0-9/._~-]', '\=s:pct(submatch(0))', 'g')
endfunction

function! s:path_from_uri(uri) abort
  let p = substitute(a:uri, '^file://', '', '')
  return substitute(p, '%\(\x\x\)', '\=eval(''"\x'' . submatch(1) . ''"'')', 'g')
endfunction

" g:collab_language_server as a command list ([] when unset or bad).
function! s:language_server() abort
  let ls = s:cfg('language_server', [])
  if type(ls) == v:t_string
    let ls = ls ==# '' ? [] : [ls]
  endif
  if type(ls) != v:t_list
        \ || !empty(filter(copy(ls), 'type(v:val) != v:t_string || v:val ==# ""'))
    call s:say("collab: g:collab_language_server must be a command like ['pylsp']; ignored", 'warn')
    return []
  endif
  return copy(ls)
endfunction

function! s:project_root() abort
  let dir = expand('%:p:h')
  if dir ==# ''
    let dir = getcwd()
  endif
  let git = finddir('.git', dir . ';')
  if git ==# ''
    let git = findfile('.git', dir . ';')
  endif
  let root = git !=# '' ? fnamemodify(git, ':p:h:h') : getcwd()
  if git !=# '' && fnamemodify(git, ':p') !~# '/$'
    let root = fnamemodify(git, ':p:h')
  endif
  return substitute(fnamemodify(root, ':p'), '/$', '', '')
endfunction

function! s:shareable(buf) abort
  if !bufloaded(a:buf) || getbufvar(a:buf, '&buftype') !=# ''
    return 0
  endif
  let name = bufname(a:buf)
  if name ==# ''
    return 0
  endif
  let full = fnamemodify(name, ':p')
  return s:root !=# '' && stridx(full, s:root . '/') == 0
endfunction

function! s:linecount(buf) abort
  return getbufinfo(a:buf)[0].linecount
endfunction

function! s:text(lines, eol) abort
  return join(a:lines, "\n") . (a:eol ? "\n" : '')
endfunction

" Length of the byte string s in code units of the negotiated encoding.
function! s:units(s) abort
  if s:encoding ==# 'utf-8'
    return len(a:s)
  endif
  let n = strchars(a:s)
  if s:encoding ==# 'utf-16'
    let n += len(filter(str2list(a:s), 'v:val > 0xFFFF'))
  endif
  return n
endfunction

" Byte column of `units` code units into `line` (clamped to the line).
function! s:byte_col(line, units) abort
  if a:units <= 0
    return 0
  endif
  if s:encoding ==# 'utf-8'
    let b = min([a:units, len(a:line)])
    " Never split a character.
    while b > 0 && b < len(a:line) && and(char2nr(a:line[b]), 0xC0) == 0x80
      let b -= 1
    endwhile
    return b
  elseif s:encoding ==# 'utf-32'
    let b = byteidxcomp(a:line, a:units)
    return b < 0 ? len(a:line) : b
  endif
  let u = 0
  let b = 0
  for c in str2list(a:line)
    if u >= a:units
      break
    endif
    let u += c > 0xFFFF ? 2 : 1
    let b += len(nr2char(c))
  endfor
  return b
endfunction

function! s:pos(line, bytecol, lines) abort
  return {'line': a:line, 'character': s:units(strpart(get(a:lines, a:line, ''), 0, a:bytecol))}
endfunction

function! s:is_cont(s, i) abort
  return a:i < len(a:s) && and(char2nr(a:s[a:i]), 0xC0) == 0x80
endfunction

" ---------------------------------------------------------------- transport

function! s:running() abort
  return s:job isnot v:null && job_status(s:job) ==# 'run'
endfunction

function! s:notify(method, params) abort
  if s:ch isnot v:null && ch_status(s:ch) ==# 'open'
    call ch_sendexpr(s:ch, {'method': a:method, 'params': a:params})
  endif
endfunction

function! s:request(method, params, Callback) abort
  if s:ch is v:null || ch_status(s:ch) !=# 'open'
    return
  endif
  call ch_sendexpr(s:ch, {'method': a:method, 'params': a:params}, {'callback': a:Callback})
endfunction

" Responses go out framed by hand: Vim 9.0's ch_sendexpr() only takes number
" ids (E475), and pygls numbers its requests with strings.
function! s:send_raw(msg) abort
  if s:ch isnot v:null && ch_status(s:ch) ==# 'open'
    let body = json_encode(extend({'jsonrpc': '2.0'}, a:msg))
    call ch_sendraw(s:ch, printf("Content-Length: %d\r\n\r\n%s", len(body), body))
  endif
endfunction

function! s:respond(id, result) abort
  call s:send_raw({'id': a:id, 'result': a:result})
endfunction

function! s:respond_error(id, code, message) abort
  call s:send_raw({'id': a:id, 'error': {'code': a:code, 'message': a:message}})
endfunction

function! s:execute(command, args, Callback) abort
  call s:request('workspace/executeCommand', {'command': a:command, 'arguments': a:args}, a:Callback)
endfunction

" --------------------------------------------------------------- lifecycle

" Start collab-ls with the mode `args` as `role`; an optional third argument
" is the root to use instead of the project root (a --workspace directory).
function! s:start(args, role, ...) abort
  if s:running()
    call s:say(printf('collab: already %s %s; :CollabStop first',
          \ s:role ==# 'host' ? 'sharing' : 'joined to', s:url !=# '' ? s:url : s:root), 'warn')
    return 0
  endif
  let cmd = copy(s:cfg('cmd', ['collab-ls']))
  if type(cmd) == v:t_string
    let cmd = [cmd]
  endif
  if !executable(cmd[0])
    call s:say(printf('collab: %s not found; install collab-ls or set g:collab_cmd', cmd[0]), 'error')
    return 0
  endif
  let cmd += a:args
  if s:cfg('name', '') !=# ''
    let cmd += ['--name', g:collab_name]
  endif
  if a:role ==# 'host'
    let ls = s:language_server()
    if !empty(ls)
      " Last: everything after `--` is the language server's command line.
      let cmd += ['--'] + ls
    endif
  endif
  let s:root = a:0 && a:1 !=# '' ? a:1 : s:project_root()
  let s:role = a:role
  let s:ready = 0
  let s:stopping = 0
  let s:docs = {}
  let s:stderr = []
  let s:job = job_start(cmd, {
        \ 'in_mode': 'lsp', 'out_mode': 'lsp', 'err_mode': 'nl',
        \ 'out_cb': function('s:on_message'),
        \ 'err_cb': function('s:on_stderr'),
        \ 'exit_cb': function('s:on_exit'),
        \ 'cwd': s:root, 'noblock': 1, 'stoponexit': 'term'})
  if job_status(s:job) !=# 'run'
    call s:say('collab: could not start ' . join(cmd), 'error')
    let s:job = v:null
    return 0
  endif
  let s:ch = job_getchannel(s:job)
  let rooturi = s:uri_from_path(s:root)
  let params = {
        \ 'processId': getpid(),
        \ 'clientInfo': {'name': 'Vim', 'version': string(v:version)},
        \ 'rootUri': rooturi,
        \ 'rootPath': s:root,
        \ 'workspaceFolders': [{'uri': rooturi, 'name': fnamemodify(s:root, ':t')}],
        \ 'initializationOptions': {'honestApplyEdit': v:true},
        \ 'capabilities': {
        \   'general': {'positionEncodings': s:cfg('position_encodings', ['utf-32', 'utf-8'])},
        \   'workspace': {'applyEdit': v:true, 'workspaceEdit': {'documentChanges': v:true},
        \                 'executeCommand': {'dynamicRegistration': v:false},
        \                 'workspaceFolders': v:true},
        \   'textDocument': {
        \     'synchronization': {'dynamicRegistration': v:false, 'didSave': v:false, 'willSave': v:false},
        \     'hover': {'contentFormat': ['plaintext', 'markdown']},
        \     'definition': {'linkSupport': v:true},
        \     'references': {},
        \     'completion': {'contextSupport': v:true, 'completionItem': {'snippetSupport': v:false,
        \                    'documentationFormat': ['plaintext', 'markdown']}},
        \     'rename': {'prepareSupport': v:false},
        \     'formatting': {},
        \     'publishDiagnostics': {'relatedInformation': v:false},
        \   },
        \   'window': {'showMessage': {}, 'showDocument': {'support': v:true}},
        \ }}
  call s:request('initialize', params, function('s:on_initialize'))
  return 1
endfunction

function! s:on_initialize(ch, resp) abort
  if has_key(a:resp, 'error')
    call s:say('collab: initialize failed: ' . get(a:resp.error, 'message', string(a:resp.error)), 'error')
    call collab#stop()
    return
  endif
  let caps = get(get(a:resp, 'result', {}), 'capabilities', {})
  let s:encoding = get(caps, 'positionEncoding', 'utf-16')
  call s:notify('initialized', {})
  let s:ready = 1
  augroup collab
    autocmd!
    autocmd BufReadPost,BufNewFile * call s:open(str2nr(expand('<abuf>')))
    autocmd BufUnload * call s:close(str2nr(expand('<abuf>')))
    autocmd CursorMoved,CursorMovedI * call s:schedule_cursor()
    autocmd BufEnter * call s:on_enter(str2nr(expand('<abuf>')))
    autocmd FileType * call s:on_filetype(str2nr(expand('<abuf>')))
    autocmd VimLeavePre * call collab#stop()
  augroup END
  for info in getbufinfo({'bufloaded': 1})
    call s:open(info.bufnr)
  endfor
  call s:on_enter(bufnr('%'))
  if s:role ==# 'host'
    call s:fetch_url(300)
  endif
endfunction

function! s:fetch_url(tries) abort
  if !s:running() || a:tries <= 0
    if s:running()
      call s:say('collab: collab-ls did not report a join URL', 'warn')
    endif
    return
  endif
  call s:execute('collab.shareUrl', [], function('s:on_url', [a:tries]))
endfunction

function! s:on_url(tries, ch, resp) abort
  let url = get(a:resp, 'result', v:null)
  if type(url) == v:t_string && url !=# ''
    let s:url = url
    let g:collab_url = url
    call setreg('"', url)
    if has('clipboard')
      silent! call setreg('+', url)
    endif
    call s:say(printf('collab: sharing %s. Others join with  :CollabJoin %s  (URL copied)', s:root, url))
  else
    call timer_start(100, {-> s:fetch_url(a:tries - 1)})
  endif
endfunction

function! s:on_stderr(ch, line) abort
  call add(s:stderr, a:line)
  if len(s:stderr) > 400
    call remove(s:stderr, 0, 199)
  endif
endfunction

function! s:on_exit(job, code) abort
  if a:job isnot s:job
    return
  endif
  let stopping = s:stopping
  call s:reset()
  if !stopping && a:code != 0
    call s:say(printf('collab: collab-ls exited (code %d); see collab#stderr()', a:code), 'warn')
  endif
endfunction

function! s:reset() abort
  for [buf, doc] in items(s:docs)
    silent! call listener_remove(doc.listener)
  endfor
  silent! call collab#language#reset(map(keys(s:docs), 'str2nr(v:val)'))
  call s:clear_peers()
  silent! autocmd! collab
  let s:docs = {}
  let s:job = v:null
  let s:ch = v:null
  let s:ready = 0
  let s:role = ''
  let s:url = ''
  let s:following = ''
  silent! unlet g:collab_url
endfunction

" ---------------------------------------------------------------- documents

function! s:open(buf) abort
  if !s:ready || has_key(s:docs, a:buf) || !s:shareable(a:buf)
    return
  endif
  let lines = getbufline(a:buf, 1, '$')
  let eol = getbufvar(a:buf, '&eol')
  let doc = {'uri': s:uri_from_path(bufname(a:buf)), 'version': 0, 'lines': lines, 'eol': eol}
  let doc.listener = listener_add(function('s:on_change'), a:buf)
  let s:docs[a:buf] = doc
  let ft = getbufvar(a:buf, '&filetype')
  call s:notify('textDocument/didOpen', {'textDocument': {
        \ 'uri': doc.uri, 'languageId': ft !=# '' ? ft : 'plaintext',
        \ 'version': 0, 'text': s:text(lines, eol)}})
  call collab#language#attach(a:buf)
endfunction

function! s:on_enter(buf) abort
  if has_key(s:docs, a:buf)
    call collab#language#map_keys(a:buf)
  endif
endfunction

" An ftplugin may set 'omnifunc' after the buffer was opened.
function! s:on_filetype(buf) abort
  if has_key(s:docs, a:buf)
    call collab#language#attach(a:buf)
  endif
endfunction

function! s:close(buf) abort
  let doc = get(s:docs, a:buf, {})
  if empty(doc)
    return
  endif
  silent! call listener_remove(doc.listener)
  call remove(s:docs, a:buf)
  call collab#language#detach(a:buf)
  call s:notify('textDocument/didClose', {'textDocument': {'uri': doc.uri}})
endfunction

function! s:send_change(buf, doc, change) abort
  let a:doc.version += 1
  call s:notify('textDocument/didChange', {
        \ 'textDocument': {'uri': a:doc.uri, 'version': a:doc.version},
        \ 'contentChanges': [a:change]})
endfunction

" listener_add callback: one LSP change for what changed since the last call.
function! s:on_change(buf, start, end, added, changes) abort
  let doc = get(s:docs, a:buf, {})
  if empty(doc)
    return
  endif
  " The union of the changes: old lines [lo, hi - delta) became new lines
  " [lo, hi). Each change is in the numbering left by the ones before it.
  let lo = -1
  let hi = 0
  let delta = 0
  for c in a:changes
    if lo < 0
      let lo = c.lnum
      let hi = c.end + c.added
    else
      let lo = min([lo, c.lnum])
      let hi = max([hi, c.end]) + c.added
    endif
    let delta += c.added
  endfor
  if lo < 0
    let [lo, hi, delta] = [a:start, a:end + a:added, a:added]
  endif
  let old = doc.lines
  let nlines = s:linecount(a:buf)
  let new_eol = getbufvar(a:buf, '&eol')
  let first = lo - 1
  let new_end = hi - 1
  let old_end = new_end - delta
  if first < 0 || old_end < first || new_end < first || old_end > len(old) || new_end > nlines
        \ || len(old) + delta != nlines
    " Not what we expected: report the whole text.
    let doc.lines = getbufline(a:buf, 1, '$')
    let doc.eol = new_eol
    call s:send_change(a:buf, doc, {'text': s:text(doc.lines, new_eol)})
    return
  endif
  if new_eol != doc.eol
    let old_end = len(old)
    let new_end = nlines
  endif
  let at_end = old_end == len(old)
  if at_end && (!doc.eol || !new_eol) && first > 0
    " The end of a document without a final newline: take the line before
    " too, so the range starts on a line that exists in both.
    let first -= 1
  endif
  let new_lines = new_end > first ? getbufline(a:buf, first + 1, new_end) : []
  let old_lines = old_end > first ? old[first : old_end - 1] : []
  let old_seg = join(old_lines, "\n") . (!empty(old_lines) && (!at_end || doc.eol) ? "\n" : '')
  let new_seg = join(new_lines, "\n") . (!empty(new_lines) && (!at_end || new_eol) ? "\n" : '')
  " Narrow to the characters that changed (never inside a character).
  let lo_len = len(old_seg)
  let ln_len = len(new_seg)
  let n = min([lo_len, ln_len])
  let p = 0
  while p < n && old_seg[p] ==# new_seg[p]
    let p += 1
  endwhile
  while p > 0 && (s:is_cont(old_seg, p) || s:is_cont(new_seg, p))
    let p -= 1
  endwhile
  let q = 0
  while q < n - p && old_seg[lo_len - 1 - q] ==# new_seg[ln_len - 1 - q]
    let q += 1
  endwhile
  while q > 0 && (s:is_cont(old_seg, lo_len - q) || s:is_cont(new_seg, ln_len - q))
    let q -= 1
  endwhile
  let start = s:advance(first, strpart(old_seg, 0, p), old)
  let end = s:advance(first, strpart(old_seg, 0, lo_len - q), old)
  let text = strpart(new_seg, p, ln_len - q - p)
  " The shadow follows the buffer.
  if old_end > first
    call remove(doc.lines, first, old_end - 1)
  endif
  if !empty(new_lines)
    call extend(doc.lines, new_lines, first)
  endif
  let doc.eol = new_eol
  if start == end && text ==# ''
    return
  endif
  call s:send_change(a:buf, doc, {'range': {'start': start, 'end': end}, 'text': text})
endfunction

" The LSP position reached from line `line`, column 0, after the bytes `piece`.
function! s:advance(line, piece, lines) abort
  let nl = count(a:piece, "\n")
  if nl == 0
    return s:pos(a:line, len(a:piece), a:lines)
  endif
  return s:pos(a:line + nl, len(a:piece) - strridx(a:piece, "\n") - 1, a:lines)
endfunction

" ------------------------------------------------------------ applying edits

function! s:buf_for_uri(uri, load) abort
  let path = s:path_from_uri(a:uri)
  let buf = bufnr('^' . escape(path, '\^$.*~[]') . '$')
  if buf < 0
    let buf = bufnr(path)
  endif
  if buf < 0 || !bufloaded(buf)
    if !a:load
      return -1
    endif
    let buf = bufadd(path)
    call setbufvar(buf, '&buflisted', 1)
    call bufload(buf)
    call s:open(buf)
  endif
  return buf
endfunction

function! s:apply_edit(params) abort
  let edit = get(a:params, 'edit', {})
  let plan = []
  if has_key(edit, 'documentChanges')
    for change in edit.documentChanges
      if has_key(change, 'kind')
        return {'applied': v:false, 'failureReason': 'unsupported resource operation ' . change.kind}
      endif
      let buf = s:buf_for_uri(change.textDocument.uri, 1)
      let want = get(change.textDocument, 'version', v:null)
      if want isnot v:null
        " Typing not reported yet goes first: it makes the edit stale.
        call listener_flush(buf)
        let doc = get(s:docs, buf, {})
        if empty(doc)
          return {'applied': v:false, 'failureReason': 'document not open in this editor'}
        endif
        if doc.version != want
          return {'applied': v:false, 'failureReason':
                \ printf('stale version: edit for %d, buffer at %d', want, doc.version)}
        endif
      endif
      call add(plan, [buf, change.edits])
    endfor
  elseif has_key(edit, 'changes')
    for [uri, edits] in items(edit.changes)
      call add(plan, [s:buf_for_uri(uri, 1), edits])
    endfor
  endif
  for [buf, edits] in plan
    try
      call s:apply_text_edits(buf, edits)
    catch
      return {'applied': v:false, 'failureReason': v:exception}
    endtry
    " The echo goes out now, before the answer.
    call listener_flush(buf)
  endfor
  return {'applied': v:true}
endfunction

function! s:cmp_edits(a, b) abort
  let [x, y] = [a:a.range.start, a:b.range.start]
  return x.line != y.line ? x.line - y.line : x.character - y.character
endfunction

function! s:apply_text_edits(buf, edits) abort
  " LSP edits all refer to the original text: apply the last first (sort is
  " stable, so edits at one position keep their order).
  for e in reverse(sort(copy(a:edits), function('s:cmp_edits')))
    call s:apply_text_edit(a:buf, e)
  endfor
endfunction

function! s:apply_text_edit(buf, e) abort
  let n = s:linecount(a:buf)
  let eol = getbufvar(a:buf, '&eol')
  let sl = a:e.range.start.line
  let el = max([a:e.range.end.line, sl])
  let first = min([sl, n - 1])
  let last = min([el, n - 1])
  let lines = getbufline(a:buf, first + 1, last + 1)
  let reaches_end = last == n - 1
  let seg = join(lines, "\n") . (!reaches_end || eol ? "\n" : '')
  let pa = s:offset(lines, first, sl, a:e.range.start.character, len(seg))
  let pb = max([pa, s:offset(lines, first, a:e.range.end.line, a:e.range.end.character, len(seg))])
  let new_text = substitute(a:e.newText, "\r\n\\=", "\n", 'g')
  let seg2 = strpart(seg, 0, pa) . new_text . strpart(seg, pb)
  let new_eol = eol
  if reaches_end
    let new_eol = seg2 =~# "\n$"
    if seg2 ==# ''
      let new_lines = first == 0 ? [''] : []
      let new_eol = first == 0 ? 0 : 1
    else
      let new_lines = split(new_eol ? seg2[: -2] : seg2, "\n", 1)
    endif
  else
    let new_lines = split(seg2[: -2], "\n", 1)
  endif
  let moves = s:keep_cursors(a:buf, first, pa, pb, new_text, len(new_lines) - len(lines), seg)
  let old_cnt = len(lines)
  let new_cnt = len(new_lines)
  let common = min([old_cnt, new_cnt])
  " Only lines that differ are set, so the listener reports a small change.
  let i = 0
  while i < common
    if lines[i] !=# new_lines[i]
      call setbufline(a:buf, first + 1 + i, new_lines[i])
    endif
    let i += 1
  endwhile
  if new_cnt > old_cnt
    call appendbufline(a:buf, first + old_cnt, new_lines[old_cnt :])
  elseif new_cnt < old_cnt
    call deletebufline(a:buf, first + new_cnt + 1, first + old_cnt)
  endif
  if new_eol != eol
    call setbufvar(a:buf, '&eol', new_eol)
  endif
  for [win, lnum, col] in moves
    call win_execute(win, printf('call cursor(%d, %d)', lnum, col))
  endfor
endfunction

" Byte offset in the segment (lines from `first`, joined with "\n") of an LSP position.
function! s:offset(lines, first, line, character, seglen) abort
  if a:line - a:first >= len(a:lines)
    return a:seglen
  endif
  let off = 0
  for i in range(a:line - a:first)
    let off += len(a:lines[i]) + 1
  endfor
  return min([off + s:byte_col(a:lines[a:line - a:first], a:character), a:seglen])
endfunction

" Windows on `buf` keep their cursor with the text around it: a cursor at or
" after the replaced bytes [a, b) of the segment moves with the text. Returns
" [[winid, lnum, col]] to set once the text is changed (cursor() clamps to
" the line as it is).
function! s:keep_cursors(buf, first, a, b, new_text, line_delta, seg) abort
  let moves = []
  for win in win_findbuf(a:buf)
    let cur = getcurpos(win)
    let [lnum, col] = [cur[1] - 1, cur[2] - 1]
    if lnum < a:first
      continue
    endif
    let segline = lnum - a:first
    let nls = split(a:seg, "\n", 1)
    if segline >= len(nls) - (a:seg =~# "\n$" ? 1 : 0)
      " After the segment: only the line number moves.
      if a:line_delta != 0
        call add(moves, [win, lnum + 1 + a:line_delta, col + 1])
      endif
      continue
    endif
    let off = 0
    for i in range(segline)
      let off += len(nls[i]) + 1
    endfor
    let off += col
    if off < a:a
      continue
    endif
    let off = off < a:b ? a:a : off - a:b + a:a + len(a:new_text)
    let before = strpart(a:seg, 0, a:a) . a:new_text . strpart(a:seg, a:b)
    let head = strpart(before, 0, off)
    let nl = count(head, "\n")
    let c = len(head) - (nl ? strridx(head, "\n") + 1 : 0)
    call add(moves, [win, a:first + nl + 1, c + 1])
  endfor
  return moves
endfunction

" ----------------------------------------------------------- server messages

function! s:on_message(ch, msg) abort
  if type(a:msg) != v:t_dict || !has_key(a:msg, 'method')
    return
  endif
  let params = get(a:msg, 'params', {})
  if has_key(a:msg, 'id')
    let id = a:msg.id
    let m = a:msg.method
    if m ==# 'workspace/applyEdit'
      call s:respond(id, s:apply_edit(params))
    elseif m ==# 'window/showDocument'
      call s:respond(id, s:show_document(params))
    elseif m ==# 'workspace/configuration'
      call s:respond(id, map(copy(get(params, 'items', [])), 'v:null'))
    elseif m ==# 'window/showMessageRequest'
      call s:show_message(params)
      call s:respond(id, v:null)
    elseif m =~# '^\(client/\(un\)\=registerCapability\|window/workDoneProgress/create\|workspace/.*/refresh\)$'
      call s:respond(id, v:null)
    else
      call s:respond_error(id, -32601, 'collab.vim does not handle ' . m)
    endif
    return
  endif
  let m = a:msg.method
  if m ==# 'window/showMessage'
    call s:show_message(params)
  elseif m ==# '$/collab/status'
    call s:on_status(params)
  elseif m ==# 'textDocument/publishDiagnostics'
    call collab#language#on_diagnostics(params)
  elseif m ==# '$/collab/peers'
    call s:render_peers(get(params, 'peers', []))
  elseif m ==# '$/collab/chat'
    if !get(params, 'self', v:false)
      call s:say(printf('[%s] %s', get(params, 'name', '?'), get(params, 'text', '')))
    endif
  endif
endfunction

function! s:show_message(params) abort
  let text = get(a:params, 'message', '')
  let type = get(a:params, 'type', 3)
  let s:last_shown = text
  call s:say(text, type == 1 ? 'error' : type == 2 ? 'warn' : 'info')
endfunction

function! s:on_status(params) abort
  let url = get(a:params, 'url', v:null)
  if type(url) == v:t_string
    let s:url = url
  endif
  let message = get(a:params, 'message', '')
  if message !=# '' && message !=# s:last_shown
    call s:say('collab: ' . message, get(a:params, 'connected', v:false) ? 'info' : 'warn')
  endif
  let s:last_shown = ''
endfunction

function! s:show_document(params) abort
  let path = s:path_from_uri(get(a:params, 'uri', ''))
  if path ==# ''
    return {'success': v:false}
  endif
  try
    if fnamemodify(bufname('%'), ':p') !=# path
      execute 'hide edit ' . fnameescape(path)
    endif
    let sel = get(a:params, 'selection', {})
    if !empty(sel)
      let line = sel.start.line
      let text = getline(line + 1)
      call cursor(line + 1, s:byte_col(text, sel.start.character) + 1)
    endif
  catch
    return {'success': v:false}
  endtry
  return {'success': v:true}
endfunction

" ------------------------------------------------------------ peer cursors

" `$/collab/peers`: {peers: [{name, colour (or color), uri, ranges: [{start, end}]}]}
function! s:render_peers(peers) abort
  let s:peers = a:peers
  call s:clear_peers()
  for peer in a:peers
    let uri = get(peer, 'uri', v:null)
    if type(uri) != v:t_string || uri ==# ''
      continue
    endif
    let buf = s:buf_for_uri(uri, 0)
    if buf < 0
      continue
    endif
    let type = s:peer_type(peer)
    for r in get(peer, 'ranges', [])
      silent! call s:add_range(buf, type, get(peer, 'name', '?'), r)
    endfor
  endfor
endfunction

function! s:peer_type(peer) abort
  let colour = get(a:peer, 'colour', get(a:peer, 'color', '#ff8800'))
  let key = substitute(colour, '[^0-9A-Za-z]', '', 'g')
  let name = 'CollabPeer_' . key
  if !has_key(s:peer_types, name)
    let [r, g, b] = [str2nr(colour[1:2], 16), str2nr(colour[3:4], 16), str2nr(colour[5:6], 16)]
    let cterm = 16 + 36 * (r * 5 / 255) + 6 * (g * 5 / 255) + (b * 5 / 255)
    execute printf('highlight default %s guibg=%s guifg=#000000 ctermbg=%d ctermfg=16', name, colour, cterm)
    execute printf('highlight default %sLabel guifg=%s ctermfg=%d cterm=italic gui=italic', name, colour, cterm)
    call prop_type_add(name, {'highlight': name, 'priority': 20})
    call prop_type_add(name . 'Label', {'highlight': name . 'Label', 'priority': 20})
    let s:peer_types[name] = 1
  endif
  return name
endfunction

function! s:add_range(buf, type, name, r) abort
  let lines = getbufline(a:buf, 1, '$')
  let [pa, pb] = [a:r.start, a:r.end]
  if pa.line > pb.line || (pa.line == pb.line && pa.character > pb.character)
    let [pa, pb] = [pb, pa]
  endif
  let n = len(lines)
  let al = min([pa.line, n - 1])
  let bl = min([pb.line, n - 1])
  let ac = s:byte_col(lines[al], pa.character)
  let bc = s:byte_col(lines[bl], pb.character)
  if al == bl && ac == bc
    " A cursor: the character under it, or a blank at the end of the line.
    let plen = ac < len(lines[al]) ? len(strcharpart(lines[al][ac :], 0, 1)) : 0
    if plen > 0
      call prop_add(al + 1, ac + 1, {'type': a:type, 'length': plen, 'bufnr': a:buf})
    else
      call prop_add(al + 1, ac + 1, {'type': a:type, 'text': ' ', 'bufnr': a:buf})
    endif
  else
    call prop_add(al + 1, ac + 1, {'type': a:type, 'end_lnum': bl + 1, 'end_col': bc + 1, 'bufnr': a:buf})
  endif
  call prop_add(pb.line < n ? pb.line + 1 : n, 0, {'type': a:type . 'Label', 'text': '  ' . a:name,
        \ 'text_align': 'after', 'bufnr': a:buf})
endfunction

function! s:clear_peers() abort
  for name in keys(s:peer_types)
    for info in getbufinfo({'bufloaded': 1})
      silent! call prop_remove({'type': name, 'bufnr': info.bufnr, 'all': 1})
      silent! call prop_remove({'type': name . 'Label', 'bufnr': info.bufnr, 'all': 1})
    endfor
  endfor
endfunction

" ------------------------------------------------------- our cursor, for peers

function! s:schedule_cursor() abort
  if !has_key(s:docs, bufnr('%'))
    return
  endif
  call timer_stop(s:cursor_timer)
  let s:cursor_timer = timer_start(30, {-> s:send_cursor()})
endfunction

function! s:send_cursor() abort
  let buf = bufnr('%')
  let doc = get(s:docs, buf, {})
  if empty(doc)
    return
  endif
  " Positions are in the text as reported: report pending changes first.
  call listener_flush(buf)
  let head = [line('.') - 1, col('.') - 1]
  let anchor = head
  if mode() =~# "^[vV\<C-v>]"
    let v = getpos('v')
    let anchor = [v[1] - 1, v[2] - 1]
  endif
  let lines = doc.lines
  call s:notify('$/collab/cursor', {'uri': doc.uri, 'ranges': [{
        \ 'start': s:pos(anchor[0], anchor[1], lines), 'end': s:pos(head[0], head[1], lines)}]})
endfunction

" ---------------------------------------------------------------- commands

function! collab#share(relay) abort
  let args = ['--share']
  if a:relay !=# ''
    let args += ['--relay', a:relay]
  endif
  return s:start(args, 'host')
endfunction

" collab#join(url [, dir]): with dir, `--workspace dir`, and dir is the root.
function! collab#join(url, ...) abort
  if a:url ==# ''
    call s:say('collab: :CollabJoin needs the URL the host shared', 'error')
    return 0
  endif
  if a:0 > 1
    call s:say('collab: :CollabJoin {url} [dir]: one directory at most (escape spaces with \)', 'error')
    return 0
  endif
  let args = ['--join', a:url]
  let root = ''
  if a:0 && a:1 !=# ''
    let root = substitute(fnamemodify(a:1, ':p'), '.\zs/\+$', '', '')
    if !isdirectory(root)
      " collab-ls would create it, but the job starts in it.
      call mkdir(root, 'p')
    endif
    let args += ['--workspace', root]
  endif
  let ok = s:start(args, 'guest', root)
  if ok
    let s:url = a:url
  endif
  return ok
endfunction

function! s:on_command_result(what, ch, resp) abort
  if has_key(a:resp, 'error')
    call s:say(printf('collab: %s failed: %s', a:what, get(a:resp.error, 'message', '?')), 'warn')
    return
  endif
  if a:what =~# '^follow'
    let s:following = matchstr(a:what, '^follow \zs.*')
    call s:say('collab: following ' . s:following . ' (:CollabUnfollow to stop)')
  elseif a:what ==# 'unfollow'
    let s:following = ''
    call s:say('collab: not following anyone')
  endif
endfunction

function! collab#follow(name) abort
  if !s:ready
    call s:say('collab: not running (:CollabShare or :CollabJoin {url})', 'warn')
    return
  endif
  call s:execute('collab.follow', [a:name], function('s:on_command_result', ['follow ' . a:name]))
endfunction

function! collab#unfollow() abort
  if s:ready
    call s:execute('collab.unfollow', [], function('s:on_command_result', ['unfollow']))
  endif
endfunction

function! collab#chat(text) abort
  if s:ready
    call s:execute('collab.chat', [a:text], function('s:on_command_result', ['chat']))
  endif
endfunction

function! s:on_status_result(ch, resp) abort
  let st = get(a:resp, 'result', v:null)
  if type(st) != v:t_dict
    call s:say('collab: no status: ' . get(get(a:resp, 'error', {}), 'message', 'collab-ls is starting'), 'warn')
    return
  endif
  call s:say(printf('collab: %s, %s, url %s, root %s, encoding %s, documents: %s',
        \ get(st, 'role', '?'), get(st, 'connected', v:false) ? 'connected' : 'not connected',
        \ type(get(st, 'url', v:null)) == v:t_string ? st.url : '?', s:root, s:encoding,
        \ join(get(st, 'documents', []), ', ')))
endfunction

function! collab#show_status() abort
  if !s:ready
    call s:say('collab: not running (:CollabShare or :CollabJoin {url})')
    return
  endif
  call s:execute('collab.status', [], function('s:on_status_result'))
endfunction

" The session status synchronously (a Dict, empty when not available).
function! collab#status(...) abort
  if !s:ready
    return {}
  endif
  let resp = ch_evalexpr(s:ch, {'method': 'workspace/executeCommand',
        \ 'params': {'command': 'collab.status', 'arguments': []}}, {'timeout': a:0 ? a:1 : 2000})
  let result = get(resp, 'result', {})
  return type(result) == v:t_dict ? result : {}
endfunction

function! collab#stop() abort
  if !s:running()
    call s:reset()
    return
  endif
  let s:stopping = 1
  let job = s:job
  let ch = s:ch
  " shutdown, then exit; collab-ls stops by itself after exit.
  silent! call ch_evalexpr(ch, {'method': 'shutdown'}, {'timeout': 2000})
  silent! call ch_sendexpr(ch, {'method': 'exit'})
  call s:reset()
  call timer_start(2000, {-> job_status(job) ==# 'run' ? job_stop(job, 'kill') : 0})
endfunction

" For scripts and tests.
function! collab#url() abort
  return s:url
endfunction

function! collab#info() abort
  return {'running': s:running(), 'ready': s:ready, 'role': s:role, 'root': s:root,
        \ 'url': s:url, 'encoding': s:encoding, 'following': s:following,
        \ 'documents': map(values(s:docs), 'v:val.uri'), 'peers': s:peers}
endfunction

function! collab#messages() abort
  return copy(s:messages)
endfunction

function! collab#stderr() abort
  return copy(s:stderr)
endfunction

" -------------------------------------- for autoload/collab/language.vim

function! collab#say(msg, ...) abort
  call s:say(a:msg, a:0 ? a:1 : 'info')
endfunction

function! collab#ready() abort
  return s:ready && s:running()
endfunction

function! collab#shared(buf) abort
  return has_key(s:docs, a:buf)
endfunction

" A request with a callback (the response Dict); 0 when collab-ls is not running.
function! collab#request(method, params, Callback) abort
  if !collab#ready() || ch_status(s:ch) !=# 'open'
    return 0
  endif
  call s:request(a:method, a:params, a:Callback)
  return 1
endfunction

" A request answered within `timeout` ms: the response Dict, {} on a timeout.
function! collab#request_sync(method, params, timeout) abort
  if !collab#ready()
    return {}
  endif
  try
    let resp = ch_evalexpr(s:ch, {'method': a:method, 'params': a:params}, {'timeout': a:timeout})
  catch
    return {}
  endtry
  return type(resp) == v:t_dict ? resp : {}
endfunction

" {textDocument: {uri}, position} of the 1-based line and byte column in a
" shared buffer, in the text as reported (pending changes are sent first);
" {} when the buffer is not shared.
function! collab#doc_position(buf, lnum, col) abort
  if !has_key(s:docs, a:buf)
    return {}
  endif
  call listener_flush(a:buf)
  let doc = s:docs[a:buf]
  return {'textDocument': {'uri': doc.uri}, 'position': s:pos(a:lnum - 1, a:col - 1, doc.lines)}
endfunction

" Byte column (0-based) of `units` code units of the negotiated encoding into `line`.
function! collab#byte_col(line, units) abort
  return s:byte_col(a:line, a:units)
endfunction

function! collab#path_from_uri(uri) abort
  return s:path_from_uri(a:uri)
endfunction

" A WorkspaceEdit applied like workspace/applyEdit: {applied, failureReason}.
function! collab#apply_workspace_edit(edit) abort
  return s:apply_edit({'edit': a:edit})
endfunction

" TextEdit[] applied to a buffer; the change goes out at once.
function! collab#apply_text_edits(buf, edits) abort
  call listener_flush(a:buf)
  call s:apply_text_edits(a:buf, a:edits)
  call listener_flush(a:buf)
endfunction

" 'omnifunc' for shared buffers (set unless g:collab_set_omnifunc is 0).
function! collab#complete(findstart, base) abort
  return collab#language#complete(a:findstart, a:base)
endfunction
