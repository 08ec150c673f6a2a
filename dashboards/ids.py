"""Component ids, in one place: pages, callbacks and browser tests use these names.

Ids that repeat (one per pin, one per wall card) are pattern-matching dicts
built from a `type` constant here.
"""

# ---- the frame around every page ---------------------------------------------- #
URL = "url"  # dcc.Location: the page and `?study=` come from it
NAV = "nav"  # the top bar's study name and page links
PAGE = "page"  # the current page's layout
STUDY_PICKER = "study-picker"  # a dropdown of the storage's studies
STUDY_PICKER_BOX = "study-picker-box"  # shown when the storage holds several studies
SIGNED_IN = "signed-in"  # the top bar: who is signed in (named users only)
PAGE_CTX = "page-ctx"  # dcc.Store: {"study": name, "trial": n} of the page shown
HELD_TICK = "held-tick"  # dcc.Interval: the frame reads whether the URL's study is held, about once a second
HELD_SEEN = "held-seen"  # dcc.Store: a digest of the banner shown, so an unchanged tick updates nothing
HELD_BANNER = "held-banner"  # shown while the study is held: who held it, since when, and a release button
HELD_TEXT = "held-text"
HELD_STATUS = "held-status"  # what became of this browser's last hold or release, when it was refused
STUDY_BUTTON = "study-button"  # pattern type: {"type": STUDY_BUTTON, "button": HOLD | RELEASE}
HOLD = "hold"  # the study page's hold button (its id's "button")
RELEASE = "release"  # the banner's release button

# ---- study page -------------------------------------------------------------------- #
STUDY_TICK = "study-tick"  # dcc.Interval
STUDY_SEEN = "study-seen"  # dcc.Store: a digest of what is shown, so an unchanged tick updates nothing
STUDY_SUMMARY = "study-summary"
STUDY_HINT = "study-hint"  # the first screen's one line: what to do
BEST_NOTE = "best-note"  # under the summary: how to get a steered best trial again
TRIALS_TABLE = "trials-table"
BEST_FIGURE = "best-figure"  # dcc.Graph: best-so-far PSNR by trial number
PINS = "pins"  # the active pins with their unpin buttons
UNPIN = "unpin"  # pattern type: {"type": UNPIN, "param": name}
STUDY_STATUS = "study-status"  # what became of this browser's last unpin
SPACE_SEEN = "space-seen"  # dcc.Store: digests of the hints, the space and their history shown (a tick of their own)
HINTS = "hints"  # the active hints, each with how many trials it has left and an unhint button
UNHINT = "unhint"  # pattern type: {"type": UNHINT, "param": name}
HINT_PARAM = "hint-param"  # dcc.Dropdown: a searched parameter (the space later trials draw from)
HINT_VALUE = "hint-value"  # text: the value to draw near (a number, or a choice)
HINT_STRENGTH = "hint-strength"  # text: the first trial's probability of a hinted draw (default 0.8)
HINT_TRIALS = "hint-trials"  # text: how many later trials the hint lasts (default 5)
HINT_SEND = "hint-send"
HINT_STATUS = "hint-status"  # what became of this browser's last hint or unhint (a rejection in the server's words)
SPACE = "space"  # one row per searched parameter: the range later trials draw from, and the spec's when edited
SPACE_PARAM = "space-param"  # dcc.Dropdown: a searched parameter
SPACE_LOW = "space-low"  # text: a float or int parameter's new low
SPACE_HIGH = "space-high"  # text: its new high
SPACE_CHOICES = "space-choices"  # text: a categorical's new choices, comma-separated
SPACE_APPLY = "space-apply"
SPACE_RESET = "space-reset"  # back to the spec's range
SPACE_STATUS = "space-status"  # what became of this browser's last space edit
SPACE_HISTORY = "space-history"  # every hint, unhint and space request, newest first

# ---- trial page -------------------------------------------------------------------- #
TRIAL_TICK = "trial-tick"
TRIAL_CURSOR = "trial-cursor"  # dcc.Store: what the browser already has (last metric step, interventions, image)
TRIAL_HEADER = "trial-header"
TARGET_IMG = "target-img"
LIVE_IMG = "live-img"
LIVE_CAPTION = "live-caption"
CURVES = "curves"  # dcc.Graph: loss and PSNR vs step, a marker per intervention
CURRENT = "current"  # the trial's current lr / optimizer / loss / weight decay
LR_SLIDER = "lr-slider"  # log10(lr), over two decades around the LR shown
LR_VALUE = "lr-value"  # the LR shown: exactly what `send` sends; the trial's current LR when nothing is edited
LR_HINT = "lr-hint"  # what the shown LR is: now, not sent yet (and how far from now), sent
LR_STEP = "lr-step"  # prefix of the stepper buttons' ids: lr-step-div10 ... lr-step-mul10
LR_INPUT = "lr-input"  # type an exact LR (Enter checks it, then sends it)
LR_SEND = "lr-send"  # sends the LR shown
LR_REVERT = "lr-revert"  # forgets the edit: the trial's current LR again, nothing sent
LR_ERROR = "lr-error"  # why a typed or stepped LR is refused, in the server's words
LR_CONFIRM = "lr-confirm"  # dcc.ConfirmDialog: a change of more than 10x, or outside the searched range
LR_PENDING = "lr-pending"  # dcc.Store: {"id", "value", "at", "sent"} of an LR edited (maybe sent), not yet applied; None
TRIAL_POLLED = "trial-polled"  # dcc.Store written only by the trial page's tick: what the poll read for the controls
OPTIMIZER = "optimizer"
LOSS = "loss"
WEIGHT_DECAY = "weight-decay"
KNOWN = "known"  # dcc.Store: the values the controls show, so syncing them sends no request
PIN = "pin"  # pattern type: {"type": PIN, "param": name}
PRUNE = "prune"  # dcc.ConfirmDialogProvider around PRUNE_BUTTON
PRUNE_BUTTON = "prune-button"
RESET = "reset"  # dcc.ConfirmDialogProvider around RESET_BUTTON
RESET_BUTTON = "reset-button"
PROMOTE = "promote"
PAUSE = "pause-button"  # shown while the trial trains
RESUME = "resume-button"  # shown instead while it is paused
KEEP = "keep-button"  # disabled once kept
MY_COMMANDS = "my-commands"  # dcc.Store (session): ids of the commands this browser sent
REQUESTS = "requests"  # what became of them
INTERVENTIONS = "interventions"  # the trial's intervention log
COMMANDS = "commands"  # every command sent to the trial, by anyone
FIND_LR = "find-lr"  # sends find_lr: an LR range test on a copy of the trial
FIND_LR_STATUS = "find-lr-status"  # beside it: what became of the trial's latest find_lr
FIND_LR_CARD = "find-lr-card"  # the latest range test: hidden until the trial has one
FIND_LR_GRAPH = "find-lr-graph"  # dcc.Graph: smoothed loss vs LR (log x), the suggestion marked
FIND_LR_TEXT = "find-lr-text"  # the suggestion, the rule and the reason
FIND_LR_APPLY = "find-lr-apply"  # "Apply suggested LR (x)": an LR edit to the suggestion, sent as the LR control sends
FIND_LR_RESULT = "find-lr-result"  # dcc.Store: {"command": id, "suggestion": lr or None} of the range test shown
UNDO = "undo-button"  # beside the intervention log: sends undo (the trial goes back to before its last change)
UNDO_STATUS = "undo-status"  # beside it: what became of the trial's latest undo
# the fork card: a new trial from this one's state now, with the settings filled in (empty: the parent's)
FORK_LR = "fork-lr"  # text: the fork's LR (the slider and steppers write it; empty: the parent's)
FORK_LR_SLIDER = "fork-lr-slider"  # log10(lr), two decades around the LR shown
FORK_LR_STEP = "fork-lr-step"  # prefix of the fork's LR stepper ids: fork-lr-step-div10 ... fork-lr-step-mul10
FORK_LR_KEEP = "fork-lr-keep"  # empties the fork's LR: the parent's
FORK_OPTIMIZER = "fork-optimizer"  # dcc.Dropdown, clearable (empty: the parent's)
FORK_LOSS = "fork-loss"
FORK_WEIGHT_DECAY = "fork-weight-decay"  # text (empty: the parent's)
FORK_SEND = "fork-send"
FORK_ERROR = "fork-error"  # why a value of the fork card is refused, in the server's words
FORK_STATUS = "fork-status"  # what became of this browser's latest fork: "forked as trial M" with a link
FORKS = "forks"  # the trial's family: its parent (a fork) and its forks, as links

# ---- wall ---------------------------------------------------------------------------- #
WALL_TICK = "wall-tick"
WALL_SEEN = "wall-seen"
WALL_GRID = "wall-grid"
WALL_CARD = "wall-card"  # pattern type: {"type": WALL_CARD, "trial": n}
WALL_PAUSE = "wall-pause"  # pattern type: {"type": WALL_PAUSE, "trial": n, "action": "pause" | "resume"}
WALL_STATUS = "wall-status"  # what became of this browser's last pause or resume, when it was refused
