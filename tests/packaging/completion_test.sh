# Bash completion, loaded the way bash-completion loads it from the installed
# tree: chainctl completes its global options, commands, command options and
# image paths; chainfs its options, -o option names and folders.
# shellcheck source=tests/packaging/lib.sh
source "$(dirname "$0")/lib.sh"
loader=/usr/share/bash-completion/bash_completion
need cmake "$loader"
install_tree

# A pool, a domain folder and a mountpoint to complete.
work=$scratch/work
mkdir -p "$work/pool" "$work/doms" "$work/mnt" "$work/mine"
touch "$work/pool/base.qcow2" "$work/pool/top.qcow2" "$work/pool/mid.qcow2"
touch "$work/doms/vm1.xml" "$work/doms/vm2.xml" "$work/doms/web.xml"

# Runs bash with bash-completion loaded and the installed completions on its
# search path, then `complete -p` for both programs, then for each line of
# stdin (a command line ending at the cursor) the candidates it completes,
# sorted, on one line, each line tagged with the command line.
complete_lines() {
  XDG_DATA_DIRS=$root/usr/share BASH_COMPLETION_USER_DIR=$scratch/none \
    bash --norc --noprofile -c '
      . "$1"
      cd "$2"
      __load_completion chainctl && __load_completion chainfs || echo "load failed"
      complete -p chainctl chainfs
      while IFS= read -r COMP_LINE; do
        COMP_POINT=${#COMP_LINE}
        read -ra COMP_WORDS <<<"$COMP_LINE"
        [[ $COMP_LINE == *" " ]] && COMP_WORDS+=("")
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMPREPLY=()
        fn=$(complete -p "${COMP_WORDS[0]}" | sed -n "s/.* -F \([^ ]*\) .*/\1/p")
        "$fn" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf "%s => %s\n" "$COMP_LINE" "$(printf "%s\n" "${COMPREPLY[@]}" | LC_ALL=C sort | paste -sd " ")"
      done' bash "$loader" "$work"
}

lines='chainctl 
chainctl ch
chainctl --pool-dir /x --pool p=/y 
chainctl --
chainctl info --json pool/t
chainctl check pool/
chainctl chain '"$work"'/pool/m
chainctl rebase -
chainctl check --
chainctl tree -
chainctl create -F qc
chainctl create -b pool/b
chainctl xml 
chainctl xml disk pool/to
chainctl --domain-dir doms domain 
chainctl --domain-dir doms domain vm
chainctl domains 
chainctl --pool-dir po
chainfs --p
chainfs -o 
chainfs -o ro,allow_o
chainfs -o ro,pool_d
chainfs -o pool_dir='"$work"'/po
chainfs -oro,domain_dir=do
chainfs --pool p='"$work"'/po
chainfs --pool-dir='"$work"'/po
chainfs --demo m'
got=$(complete_lines <<<"$lines")

w=$work
want="complete -F _chainctl chainctl
complete -F _chainfs chainfs
chainctl  => cat chain check create domain domains info map pools rebase tree users xml
chainctl ch => chain check
chainctl --pool-dir /x --pool p=/y  => cat chain check create domain domains info map pools rebase tree users xml
chainctl -- => --domain-dir --help --pool --pool-dir --run-dir --version
chainctl info --json pool/t => pool/top.qcow2
chainctl check pool/ => pool/base.qcow2 pool/mid.qcow2 pool/top.qcow2
chainctl chain $w/pool/m => $w/pool/mid.qcow2
chainctl rebase - => --help -F -b -u
chainctl check -- => --all --help --json
chainctl tree - => --dot --help
chainctl create -F qc => qcow qcow2
chainctl create -b pool/b => pool/base.qcow2
chainctl xml  => disk volume
chainctl xml disk pool/to => pool/top.qcow2
chainctl --domain-dir doms domain  => doms mine mnt pool vm1 vm2 web
chainctl --domain-dir doms domain vm => vm1 vm2
chainctl domains  => 
chainctl --pool-dir po => pool
chainfs --p => --pool --pool-dir
chainfs -o  => allow_other allow_root auto_unmount cache_timeout= domain_dir= pool= pool_dir= ro run_dir= rw
chainfs -o ro,allow_o => ro,allow_other
chainfs -o ro,pool_d => ro,pool_dir=
chainfs -o pool_dir=$w/po => $w/pool/
chainfs -oro,domain_dir=do => doms/
chainfs --pool p=$w/po => $w/pool/
chainfs --pool-dir=$w/po => $w/pool/
chainfs --demo m => mine/ mnt/"
check_equal "complete -p and the candidates for each command line" "$want" "$got"
finish
