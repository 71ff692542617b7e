;;; collab-ls.el --- Real-time collaborative editing with collab-ls and eglot -*- lexical-binding: t; -*-

;; Package-Requires: ((emacs "28.1") (eglot "1.9"))
;; Keywords: tools, convenience

;;; Commentary:

;; collab-ls runs as a language server for the project (eglot), so you and
;; others edit the same files at the same time.
;;
;;   M-x collab-ls-share       host a session (the join URL is shown and copied)
;;   M-x collab-ls-join URL    join a session (C-u: into an empty folder,
;;                             `--workspace', with no checkout of the project)
;;   M-x collab-ls-follow      follow a peer (collab-ls's collab.follow)
;;   M-x collab-ls-unfollow, collab-ls-chat, collab-ls-status, collab-ls-stop
;;
;; With `collab-ls-language-server' set, e.g. to ("pylsp"), `collab-ls-share'
;; shares that language server: collab-ls runs it on the host and you and
;; every guest get its hover, completion, definition and the rest.
;;
;; What this changes in eglot, for the collab-ls server only (its own
;; `collab-ls-server' class):
;;
;; - `workspace/applyEdit' is applied without any confirmation prompt (eglot
;;   1.9 asks when a file has no buffer, whatever
;;   `eglot-confirm-server-initiated-edits' says), honestly: pending changes
;;   are sent first, an edit for an older version is answered `applied:
;;   false' (collab-ls rebases it and sends it again), and the echo is sent at
;;   once, before the answer.  `initializationOptions' carry
;;   `honestApplyEdit: true'.
;; - `eglot-confirm-server-initiated-edits' is set to nil and
;;   `eglot-send-changes-idle-time' to `collab-ls-change-delay' (0.05 s).
;; - Every file buffer under the project root is managed, whatever its major
;;   mode.
;; - `$/collab/peers' is drawn as overlays (peer cursors and selections with
;;   names), `$/collab/chat' and `$/collab/status' go to the echo area,
;;   `window/showDocument' (follow) opens the file at the peer's cursor, and
;;   your cursor is sent as `$/collab/cursor'.

;;; Code:

(require 'cl-lib)
(require 'eglot)
(require 'jsonrpc)
(require 'project)

(defgroup collab-ls nil
  "Real-time collaborative editing with collab-ls."
  :group 'tools)

(defcustom collab-ls-program "collab-ls"
  "The collab-ls executable."
  :type 'string)

(defcustom collab-ls-extra-args nil
  "Extra arguments for collab-ls, e.g. (\"--log-file\" \"/tmp/collab.log\")."
  :type '(repeat string))

(defcustom collab-ls-name nil
  "Your name in the session (collab-ls --name); nil for the OS user."
  :type '(choice (const nil) string))

(defcustom collab-ls-language-server nil
  "The language server `collab-ls-share' shares with the guests, or nil.
A command with its arguments, e.g. (\"pylsp\") or (\"clangd\" \"--background-index\"):
collab-ls runs it on the host and answers you and every guest with it
(`collab-ls --share ... -- pylsp'; it goes last, after `--').
`collab-ls-join' ignores it: a guest's requests go to the host's server."
  :type '(choice (const :tag "None" nil) (repeat :tag "Command" string)))

(defcustom collab-ls-change-delay 0.05
  "Idle seconds before eglot sends changes (`eglot-send-changes-idle-time')."
  :type 'number)

(defcustom collab-ls-major-modes
  '(fundamental-mode text-mode prog-mode org-mode markdown-mode emacs-lisp-mode
    lisp-interaction-mode python-mode c-mode c++-mode js-mode sh-mode conf-mode)
  "Major modes managed from the start; others are added as files open."
  :type '(repeat symbol))

(defclass collab-ls-server (eglot-lsp-server) ()
  "An eglot server object for collab-ls.")

(defvar collab-ls--server nil "The running collab-ls server, if any.")
(defvar collab-ls--root nil "The shared project root (a directory name).")
(defvar collab-ls--role nil "host or guest.")
(defvar collab-ls-url nil "The session's join URL, once known.")
(defvar collab-ls--overlays nil "Overlays showing peers.")
(defvar collab-ls--peers nil "The last `$/collab/peers' list.")
(defvar collab-ls--cursor-timer nil)
(defvar collab-ls--last-shown nil)

;;; Server object

(cl-defmethod eglot-initialization-options ((_server collab-ls-server))
  "collab-ls may trust `applied: true': edits are refused when stale."
  (list :honestApplyEdit t))

(cl-defmethod eglot-client-capabilities ((_server collab-ls-server))
  "Eglot's capabilities, plus `window/showDocument' (for follow)."
  (let ((caps (cl-call-next-method)))
    (plist-put caps :window
               (append (plist-get caps :window)
                       (list :showDocument (list :support t))))))

(defun collab-ls--buffer-for-path (path)
  "A live buffer visiting PATH, loading it if needed."
  (or (find-buffer-visiting path)
      (let ((buf (find-file-noselect path)))
        buf)))

(defun collab-ls--apply-edit (edit)
  "Apply the WorkspaceEdit EDIT honestly; return the ApplyWorkspaceEditResult."
  (let ((plan nil)
        (failure nil))
    (cl-loop for change across (or (plist-get edit :documentChanges) [])
             until failure
             do (let* ((doc (plist-get change :textDocument))
                       (path (eglot--uri-to-path (plist-get doc :uri)))
                       (version (plist-get doc :version))
                       (buf (collab-ls--buffer-for-path path)))
                  (with-current-buffer buf
                    (when version
                      ;; Typing not sent yet goes first: it makes the edit stale.
                      (when eglot--managed-mode
                        (eglot--signal-textDocument/didChange))
                      (cond ((not eglot--managed-mode)
                             (setq failure "document not open in this editor"))
                            ((not (equal version eglot--versioned-identifier))
                             (setq failure
                                   (format "stale version: edit for %s, buffer at %s"
                                           version eglot--versioned-identifier))))))
                  (push (list buf (plist-get change :edits)) plan)))
    (unless (plist-get edit :documentChanges)
      (cl-loop for (uri edits) on (plist-get edit :changes) by #'cddr
               do (push (list (collab-ls--buffer-for-path
                               (eglot--uri-to-path (substring (symbol-name uri) 1)))
                              edits)
                        plan)))
    (if failure
        (list :applied :json-false :failureReason failure)
      (condition-case err
          (progn
            (dolist (item (nreverse plan))
              (with-current-buffer (car item)
                (let ((inhibit-message t) (message-log-max nil))
                  (eglot--apply-text-edits (cadr item)))
                ;; The echo goes out now, before the answer.
                (when eglot--managed-mode
                  (eglot--signal-textDocument/didChange))))
            (list :applied t))
        (error (list :applied :json-false
                     :failureReason (error-message-string err)))))))

(cl-defmethod eglot-handle-request
  ((_server collab-ls-server) (_method (eql workspace/applyEdit)) &key _label edit)
  "Apply EDIT without asking: peers' typing must not wait for a prompt."
  (collab-ls--apply-edit edit))

(cl-defmethod eglot-handle-request
  ((_server collab-ls-server) (_method (eql window/showDocument))
   &key uri selection &allow-other-keys)
  "Open URI at SELECTION (following a peer)."
  (let ((path (eglot--uri-to-path uri)))
    (if (not (file-exists-p path))
        (list :success :json-false)
      (pop-to-buffer-same-window (collab-ls--buffer-for-path path))
      (when selection
        (goto-char (collab-ls--position-to-point (plist-get selection :start))))
      (list :success t))))

(cl-defmethod eglot-handle-notification
  ((_server collab-ls-server) (_method (eql window/showMessage)) &key type message)
  "Show MESSAGE from collab-ls in the echo area."
  (setq collab-ls--last-shown message)
  (message "%s" (if (<= type 1) (propertize message 'face 'error) message)))

(cl-defmethod eglot-handle-notification
  ((_server collab-ls-server) (_method (eql $/collab/status))
   &key connected message url &allow-other-keys)
  "The link to the relay changed state."
  (when (stringp url) (setq collab-ls-url url))
  (when (and (stringp message) (not (equal message collab-ls--last-shown)))
    (message "collab: %s%s" message (if (eq connected t) "" " (not connected)")))
  (setq collab-ls--last-shown nil))

(cl-defmethod eglot-handle-notification
  ((_server collab-ls-server) (_method (eql $/collab/chat))
   &key name text self &allow-other-keys)
  "A chat message: in the echo area (others' only: yours you just typed)."
  (unless (eq self t)
    (message "[%s] %s" name text)))

(cl-defmethod eglot-handle-notification
  ((_server collab-ls-server) (_method (eql $/collab/peers)) &key peers &allow-other-keys)
  "Draw PEERS' cursors and selections."
  (setq collab-ls--peers peers)
  (collab-ls--draw-peers peers))

;;; Peer cursors

(defun collab-ls--clear-overlays ()
  (mapc #'delete-overlay collab-ls--overlays)
  (setq collab-ls--overlays nil))

;; Not `eglot--lsp-position-to-point': in eglot 1.9 it loops forever on a
;; column inside a surrogate pair (its bisection steps +1, -1, +1...), and a
;; peer's position, computed by collab-ls before our unsent typing, can land
;; there (an emoji typed here a moment ago).  This walks the line instead:
;; utf-16 code units, as eglot 1.9 counts them; a column inside a character
;; lands after it, one past the line's end at its end.
(defun collab-ls--position-to-point (pos)
  "Point for the LSP position POS (utf-16 columns) in the current buffer."
  (save-excursion
    (save-restriction
      (widen)
      (goto-char (point-min))
      (let ((line (plist-get pos :line))
            (col (plist-get pos :character))
            (units 0))
        (when (and (wholenump line) (zerop (forward-line line)) (wholenump col))
          (while (and (< units col) (not (eolp)))
            (setq units (+ units (if (> (char-after) #xFFFF) 2 1)))
            (forward-char 1)))
        (point)))))

(defun collab-ls--draw-peers (peers)
  "Overlays for PEERS: {name, colour, uri, ranges: [{start, end}]}."
  (collab-ls--clear-overlays)
  (cl-loop
   for peer across (or peers [])
   for uri = (plist-get peer :uri)
   for colour = (or (plist-get peer :colour) (plist-get peer :color) "orange")
   for name = (or (plist-get peer :name) "?")
   for buf = (and (stringp uri) (find-buffer-visiting (eglot--uri-to-path uri)))
   when buf
   do (with-current-buffer buf
        (save-restriction
          (widen)
          (cl-loop
           for range across (or (plist-get peer :ranges) [])
           do (let* ((a (collab-ls--position-to-point (plist-get range :start)))
                     (b (collab-ls--position-to-point (plist-get range :end)))
                     (beg (min a b))
                     (end (max a b))
                     (cursor (= beg end))
                     (ov (make-overlay beg (if (and cursor (< end (point-max))
                                                    (/= (char-after end) ?\n))
                                               (1+ end)
                                             end))))
                (overlay-put ov 'collab-ls t)
                (overlay-put ov 'priority 100)
                (overlay-put ov 'face `(:background ,colour :foreground "black"))
                (overlay-put ov 'help-echo (format "%s (collab-ls)" name))
                (when (= (overlay-start ov) (overlay-end ov))
                  (overlay-put ov 'before-string
                               (propertize " " 'face `(:background ,colour))))
                (overlay-put ov 'after-string
                             (propertize (format " %s " name)
                                         'face `(:foreground ,colour :slant italic)))
                (push ov collab-ls--overlays)))))))

;;; Our cursor, for peers

(defun collab-ls--send-cursor ()
  (setq collab-ls--cursor-timer nil)
  (when (and collab-ls--server (jsonrpc-running-p collab-ls--server)
             eglot--managed-mode (eq (eglot-current-server) collab-ls--server))
    (eglot--signal-textDocument/didChange)
    (let ((anchor (if (region-active-p) (mark) (point))))
      (jsonrpc-notify collab-ls--server '$/collab/cursor
                      (list :uri (eglot--path-to-uri buffer-file-name)
                            :ranges (vector
                                     (list :start (eglot--pos-to-lsp-position anchor)
                                           :end (eglot--pos-to-lsp-position (point)))))))))

(defun collab-ls--post-command ()
  (when (and collab-ls--server eglot--managed-mode)
    (when collab-ls--cursor-timer (cancel-timer collab-ls--cursor-timer))
    (setq collab-ls--cursor-timer
          (run-with-timer 0.03 nil
                          (let ((buf (current-buffer)))
                            (lambda ()
                              (when (buffer-live-p buf)
                                (with-current-buffer buf (collab-ls--send-cursor)))))))))

;;; Managing every file under the root

(defun collab-ls--under-root-p (file)
  (and collab-ls--root file
       (string-prefix-p collab-ls--root (expand-file-name file))))

(defun collab-ls--adopt-mode ()
  "Make the collab-ls server manage this buffer's major mode (before eglot looks)."
  (when (and collab-ls--server (jsonrpc-running-p collab-ls--server)
             (collab-ls--under-root-p buffer-file-name)
             (not (memq major-mode (eglot--major-modes collab-ls--server))))
    (setf (eglot--major-modes collab-ls--server)
          (append (eglot--major-modes collab-ls--server) (list major-mode)))
    (setq eglot--cached-server nil)))

(defun collab-ls--managed-hook ()
  (if eglot--managed-mode
      (add-hook 'post-command-hook #'collab-ls--post-command nil t)
    (remove-hook 'post-command-hook #'collab-ls--post-command t)))

;;; Starting and stopping

(defun collab-ls--project (dir)
  "The shared root as eglot's project for DIR under it.
For `project-find-functions'."
  (when (and collab-ls--root (bound-and-true-p eglot-lsp-context)
             (string-prefix-p collab-ls--root
                              (file-name-as-directory (expand-file-name dir))))
    (cons 'transient collab-ls--root)))

(defcustom collab-ls-root nil
  "The folder to share; nil for the git root of the current file, else its folder.
Files are matched between peers by their path relative to it, so every peer
must share the same folder of the project (Neovim and Vim use the git root,
else their working directory)."
  :type '(choice (const nil) directory))

(defun collab-ls--project-root ()
  (file-name-as-directory
   (expand-file-name
    (or collab-ls-root
        (locate-dominating-file default-directory ".git")
        default-directory))))

(defun collab-ls--language-server ()
  "`collab-ls-language-server' as a list of strings (nil if unset or malformed)."
  (let ((ls collab-ls-language-server))
    (when (stringp ls) (setq ls (list ls)))
    (cond ((null ls) nil)
          ((and (proper-list-p ls)
                (cl-every (lambda (a) (and (stringp a) (not (string-empty-p a)))) ls))
           ls)
          (t (display-warning
              'collab-ls
              "`collab-ls-language-server' must be a command like (\"pylsp\"); ignored")
             nil))))

(defun collab-ls--start (args role &optional root)
  "Start collab-ls with mode ARGS as ROLE, for the current project or ROOT."
  (when (and collab-ls--server (jsonrpc-running-p collab-ls--server))
    (user-error "collab: already %s; M-x collab-ls-stop first"
                (if (eq collab-ls--role 'host) "sharing" "joined")))
  (unless (executable-find collab-ls-program)
    (user-error "collab: %s not found; install collab-ls or set `collab-ls-program'"
                collab-ls-program))
  (setq eglot-confirm-server-initiated-edits nil
        eglot-send-changes-idle-time collab-ls-change-delay)
  (let* ((root (if root (file-name-as-directory (expand-file-name root))
                 (collab-ls--project-root)))
         (default-directory root)
         (project (cons 'transient root))
         (modes (delete-dups
                 (append collab-ls-major-modes
                         (cl-loop for b in (buffer-list)
                                  when (collab-ls--under-root-p (buffer-file-name b))
                                  collect (buffer-local-value 'major-mode b)))))
         (server (and (eq role 'host) (collab-ls--language-server)))
         (contact (append (list collab-ls-program) collab-ls-extra-args args
                          (and collab-ls-name (list "--name" collab-ls-name))
                          ;; Last: everything after `--' is the server's command line.
                          (and server (cons "--" server)))))
    (setq collab-ls--root root
          collab-ls--role role
          collab-ls-url (and (eq role 'guest) (cadr (member "--join" args))))
    (add-hook 'find-file-hook #'collab-ls--adopt-mode -50)
    (add-hook 'eglot-managed-mode-hook #'collab-ls--managed-hook)
    ;; Every buffer under the root belongs to one project, for eglot.
    (add-hook 'project-find-functions #'collab-ls--project -90)
    (setq collab-ls--server
          (eglot--connect modes project 'collab-ls-server contact "plaintext"))
    ;; Buffers already visiting files under the root (any major mode).
    (dolist (b (buffer-list))
      (when (collab-ls--under-root-p (buffer-file-name b))
        (with-current-buffer b
          (collab-ls--adopt-mode)
          (eglot--maybe-activate-editing-mode))))
    (when (eq role 'host)
      (collab-ls--fetch-url 300))
    collab-ls--server))

(defun collab-ls--fetch-url (tries)
  "Ask collab-ls for the join URL until it has one (TRIES times, 0.1 s apart)."
  (when (and collab-ls--server (jsonrpc-running-p collab-ls--server) (> tries 0))
    (jsonrpc-async-request
     collab-ls--server :workspace/executeCommand
     (list :command "collab.shareUrl" :arguments [])
     :success-fn (lambda (url)
                   (if (stringp url)
                       (progn
                         (setq collab-ls-url url)
                         (kill-new url)
                         (message "collab: sharing %s. Others join with M-x collab-ls-join %s (copied)"
                                  collab-ls--root url))
                     (run-with-timer 0.1 nil #'collab-ls--fetch-url (1- tries))))
     :error-fn (lambda (&rest _) (run-with-timer 0.1 nil #'collab-ls--fetch-url (1- tries)))
     :timeout-fn (lambda () (run-with-timer 0.1 nil #'collab-ls--fetch-url (1- tries))))))

(defun collab-ls--server-or-lose ()
  (or (and collab-ls--server (jsonrpc-running-p collab-ls--server) collab-ls--server)
      (user-error "collab: not running (M-x collab-ls-share or collab-ls-join)")))

(defun collab-ls--command (command args on-success)
  "Run COMMAND with ARGS on collab-ls; ON-SUCCESS gets the result.
Errors are shown in the echo area."
  (jsonrpc-async-request
   (collab-ls--server-or-lose) :workspace/executeCommand
   (list :command command :arguments (vconcat args))
   :success-fn on-success
   :error-fn (eglot--lambda ((ResponseError) message)
               (message "collab: %s failed: %s" command message))
   :timeout-fn (lambda () (message "collab: %s: no answer" command))))

;;;###autoload
(defun collab-ls-share (&optional relay)
  "Share the current project; with a prefix argument, ask for a RELAY URL."
  (interactive (list (and current-prefix-arg (read-string "Relay URL: "))))
  (collab-ls--start (append '("--share") (and relay (not (string-empty-p relay))
                                               (list "--relay" relay)))
                    'host))

;;;###autoload
(defun collab-ls-join (url &optional workspace)
  "Join the session at URL.
With WORKSPACE (a directory; asked for with a prefix argument), join with no
checkout of the project: `collab-ls --join URL --workspace WORKSPACE' mirrors
the host's project into WORKSPACE (created if needed), which is the shared root."
  (interactive
   (list (read-string "Join URL: ")
         (and current-prefix-arg
              (read-directory-name "Mirror the host's project into: "))))
  (when (string-empty-p url) (user-error "collab: the URL the host shared is needed"))
  (if (not (and workspace (not (string-empty-p workspace))))
      (collab-ls--start (list "--join" url) 'guest)
    (let ((dir (expand-file-name workspace)))
      ;; collab-ls would create it, but it is the process's working directory.
      (make-directory dir t)
      (collab-ls--start (list "--join" url "--workspace" (directory-file-name dir))
                        'guest dir))))

(defun collab-ls-follow (name)
  "Follow the peer called NAME."
  (interactive
   (list (completing-read "Follow: "
                          (cl-loop for p across (or collab-ls--peers [])
                                   collect (plist-get p :name)))))
  (collab-ls--command "collab.follow" (list name)
                      (lambda (_) (message "collab: following %s" name))))

(defun collab-ls-unfollow ()
  "Stop following."
  (interactive)
  (collab-ls--command "collab.unfollow" nil (lambda (_) (message "collab: not following"))))

(defun collab-ls-chat (text)
  "Send TEXT to everyone in the session."
  (interactive (list (read-string "Chat: ")))
  (collab-ls--command "collab.chat" (list text) #'ignore))

(defun collab-ls-status ()
  "Show the session status."
  (interactive)
  (collab-ls--command
   "collab.status" nil
   (lambda (s)
     (message "collab: %s, %s, url %s, documents: %s"
              (plist-get s :role)
              (if (eq (plist-get s :connected) t) "connected" "not connected")
              (or (plist-get s :url) "?")
              (mapconcat #'identity (plist-get s :documents) ", ")))))

(defun collab-ls-stop ()
  "Stop collab-ls (the host's stop ends the session for everyone)."
  (interactive)
  (when (and collab-ls--server (jsonrpc-running-p collab-ls--server))
    (eglot-shutdown collab-ls--server))
  (collab-ls--clear-overlays)
  (remove-hook 'find-file-hook #'collab-ls--adopt-mode)
  (remove-hook 'project-find-functions #'collab-ls--project)
  (setq collab-ls--server nil collab-ls--root nil collab-ls--role nil collab-ls-url nil))

(provide 'collab-ls)
;;; collab-ls.el ends here
