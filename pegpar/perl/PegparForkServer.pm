package PegparForkServer;
# pegpar's fork server: GNU parallel compiled once, then forked for each wave.
#
# Loaded with -M ahead of parallel's script, this module's INIT block runs
# once the whole script is compiled and before any of it runs. It reads
# requests from stdin, one a line: tab-separated, percent-encoded fields
#
#   cwd  stdin-fifo  stderr-file  pid-file  exit-file  argc  argv...  env...
#
# For each, it forks. The parent answers the child's pid on stdout (0 when
# it could not) at once, the child already leading its own process group,
# and writes the child's wait status to exit-file once the
# child ends (written aside, then renamed). The child takes the request's
# directory, environment, input and arguments, and leaves the INIT block:
# parallel's main program then runs in it as if perl had just compiled it.
# The pid file is locked before the fork and stays locked, through the
# child's copy of it, for as long as the child lives: a controller started
# after a crash tells from the lock whether the wave's parallel still runs.
# At the end of its input (pegpar ended) the server exits; running children
# go on.
use strict;
use warnings;
use Fcntl qw(:flock O_RDONLY O_NONBLOCK F_GETFL F_SETFL);
use POSIX qw(setpgid);

our $pid_file_of_child;    # the child's pid file: held open, and so locked
my %exit_file;             # pid of a running child -> where its status goes
my %early;                 # pid -> status of a child reaped before its exit file was noted

sub _reap {
    local ($!, $?);
    while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
        my $path = delete $exit_file{$pid};
        if (defined $path) {
            _write_aside($path, "$?\n");
        } else {
            $early{$pid} = $?;
        }
    }
}

sub _write_aside {
    my ($path, $text) = @_;
    open(my $fh, '>', "$path.tmp") or return;
    print $fh $text;
    close($fh) and rename("$path.tmp", $path);
}

sub _decode {
    my ($s) = @_;
    $s =~ s/%([0-9A-F]{2})/chr(hex($1))/ge;
    return $s;
}

# The longest command line this machine takes, which parallel finds by
# running `echo` on ever longer lines (some twenty processes, megabytes of
# arguments) unless its cache under PARALLEL_HOME has it: found once, at the
# first request, from the cache of that request's PARALLEL_HOME (written
# there if missing, as parallel would), rather than by each parallel of a
# fresh PARALLEL_HOME, all at once when a fleet's waves start together.
my $line_length_known;

sub _line_length {
    return if $line_length_known;
    my ($home) = map { /^PARALLEL_HOME=(.+)/s ? $1 : () } @_;
    return unless defined $home and -d $home;
    $line_length_known = 1;
    {
        local $SIG{CHLD} = 'DEFAULT';    # parallel waits for its own echo
        local $Global::cache_dir = $home;
        eval { Limits::Command::max_length(); 1 } or $Limits::Command::line_max_len = 0;
    }
    _reap();    # a wave that ended meanwhile
}

# The server's start (compilation, the work above) freed many small blocks
# of memory, scattered over pages its forks share with it. A fork's own small
# allocations (parallel's start: options, queues, job objects) would reuse
# them and so copy every such page, some 1.5 MB of each fork's 4.5 MB: taken
# and held here once, before the first fork, they leave the forks fresh
# memory instead. A few thousand of the small sizes are enough; more only
# add memory the forks share.
my @held_blocks;

sub _hold_small_blocks {
    return if @held_blocks;
    @held_blocks = map { my $s = ' ' x ($_ % 48); \$s } 1 .. 3000;
}

sub _blocking {
    my ($fh) = @_;
    my $flags = fcntl($fh, F_GETFL, 0) or return 0;
    return fcntl($fh, F_SETFL, $flags & ~O_NONBLOCK);
}

# Forks for one request: undef in the server, the request in the child.
sub _fork {
    my ($line) = @_;
    my @f = map { _decode($_) } split(/\t/, $line, -1);
    my ($cwd, $in_path, $err_path, $pid_path, $exit_path, $argc) = splice(@f, 0, 6);
    my @argv = splice(@f, 0, $argc);
    _line_length(@f);
    _hold_small_blocks();
    my ($in, $pid_fh);
    # pegpar holds the fifo open for writing while it waits for the answer,
    # so the child's input is there before it runs. Opened without waiting
    # for a writer all the same: a pegpar killed after its request holds it
    # no more, and a blocking open would wait forever; the child then reads
    # the end of its input at once, and its parallel ends.
    unless (sysopen($in, $in_path, O_RDONLY | O_NONBLOCK) and _blocking($in)
            and open($pid_fh, '>', $pid_path) and flock($pid_fh, LOCK_EX | LOCK_NB)) {
        print "0\n";
        return undef;
    }
    my $pid = fork();
    if (!defined $pid) {
        print "0\n";
        return undef;
    }
    if ($pid) {
        # its own process group before pegpar has its pid (the child does the
        # same: whichever comes first), so that pegpar can signal the group
        # at once; the server's session has no terminal, nor have its children
        setpgid($pid, $pid);
        $exit_file{$pid} = $exit_path;
        # a child that ended at once may have been reaped before that line
        _write_aside(delete $exit_file{$pid}, "$early{$pid}\n") if exists $early{$pid};
        delete $early{$pid};
        print $pid_fh "$pid\n";
        close($pid_fh);
        close($in);
        print "$pid\n";
        return undef;
    }
    $SIG{CHLD} = 'DEFAULT';
    $pid_file_of_child = $pid_fh;
    setpgid(0, 0);
    umask(077);
    chdir($cwd) or POSIX::_exit(127);
    %ENV = map { split(/=/, $_, 2) } @f;
    open(STDIN, '<&', $in) or POSIX::_exit(127);
    close($in);
    open(STDOUT, '>', '/dev/null') or POSIX::_exit(127);
    open(STDERR, '>', $err_path) or POSIX::_exit(127);
    srand();       # not the server's sequence: parallel names temporary files with rand
    $^T = time;    # parallel's --eta counts from the start of the program
    @ARGV = @argv;
    return 1;
}

INIT {
    # parallel starts each job through open3_setpgrp, which it first points
    # at one of two versions by a test: does IPC::Open3 fork without exec
    # ("-")? This version's test quotes its perl script once too often, so it
    # always fails, and every job then starts through `perl -e` (a perl more
    # per job: a search of PATH, an exec, a compile) that only sets the
    # process group and execs the shell. Any perl that forks passes the real
    # test: take parallel's in-process version, which does the same in the
    # forked child.
    {
        no warnings 'redefine';
        *Job::open3_setpgrp = \&Job::open3_setpgrp_internal;
    }
    # What every parallel works out at its start and then keeps: done here
    # once, the forks inherit it. The host's name (`hostname`), and the
    # colours of --color and --tag (two `tput`, each under two shells).
    ::hostname();
    ::now();    # loads Time::HiRes and defines, by an eval, the clock parallel reads
    Job::init_color();
    $SIG{CHLD} = \&_reap;
    select((select(STDOUT), $| = 1)[0]);
    my $buffer = '';
    SERVE: while (1) {
        my $n = sysread(STDIN, $buffer, 65536, length($buffer));
        if (!defined $n) {
            next SERVE if $!{EINTR};
            POSIX::_exit(1);
        }
        POSIX::_exit(0) if $n == 0;
        while ((my $end = index($buffer, "\n")) >= 0) {
            my $line = substr($buffer, 0, $end + 1, '');
            chop($line);
            last SERVE if _fork($line);
        }
    }
}

1;
