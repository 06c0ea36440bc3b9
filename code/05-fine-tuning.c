// 05-fine-tuning.c: Chapter 5, transfer learning by fine-tuning.
// The same start as chapter 4 (ImageNet ResNet34, a new 512 -> 37 fc), but every weight trains:
// the backbone adapts to the pets instead of serving fixed features. BatchNorm runs in train mode
// (batch statistics, running statistics updated), the training set is shuffled every epoch with
// the seed, and the loss, optimizer and scheduler are chapter 4's (CrossEntropyLoss(reduction=
// 'sum'), Adam, ReduceLROnPlateau(factor 0.1, patience 2) on the validation loss).
//
// Every epoch runs the whole network forward and backward over 3680 images, so the images are
// decoded once into a uint8 cache of 224x224 crops and later epochs only normalize them; a
// checkpoint after every epoch lets --resume continue an interrupted run (Ctrl-C, kill -9) with
// exactly the numbers an uninterrupted run would have given.
//
// Outputs (under --results, default results/): 05-fine-tuning.{csv,json,pth,predictions.csv} and
// 05-fine-tuning.ckpt.
#include <stdio.h>
#include <stdlib.h>

#include "core/common.h"
#include "experiment/experiment.h"
#include "data/preprocess.h"

static const char ABOUT[] =
    "05-fine-tuning: train every weight of an ImageNet ResNet34 with a new 37-way head on\n"
    "Oxford-IIIT Pet (BatchNorm in train mode, shuffled batches), checkpointing every epoch.";

// region: defaults
// Learning rate and length. Fine-tuning starts from weights that already work, so its steps must
// be small enough not to wreck them, yet the new head starts from scratch and must learn fast.
// Common recipes: Keras's transfer-learning guide fine-tunes the whole network with Adam at 1e-5
// once the head is trained; fastai's fine_tune gives the unfrozen network rates from about 1e-5
// (first layers) to 1e-3 (head). With a single rate for every
// layer and an untrained head we take 1e-4: ten times below the 1e-3 that chapter 4 gives the
// head alone, between those two ends. Adam divides each step by the gradient's running RMS, so
// the 'sum' reduction (gradients 32x those of 'mean') does not change what the rate means.
// Ten epochs: a pretrained network adapts within a few epochs on 3680 images, and the plateau
// scheduler (patience 2) still gets the chance to lower the rate once the validation loss stalls.
#define FT_LR 1e-4f
#define FT_EPOCHS 10
// endregion

// One pass over the validation split in eval mode (running statistics); keeps the logits.
static void validate(Experiment *x, Source *val, double *loss, int *correct) {
    *loss = 0;
    *correct = 0;
    XBatch b;
    source_start(val, -1, "validate");
    while (source_next(val, &b)) {
        resnet34_forward(x->model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/0); // model.eval()
        int c = 0;
        *loss += resnet34_loss(x->model, b.label, /*mean=*/0, /*backward=*/0, 1.0f, &c);
        *correct += c;
        exp_keep_logits(x, &b);
    }
}

int main(int argc, char **argv) {
    ExpArgs a = {.root = "data/oxford-iiit-pet",
                 .weights = "data/weights/resnet34-b627a593.pth",
                 .device = "auto",
                 .results = "results",
                 .epochs = FT_EPOCHS,
                 .batch_size = 32,
                 .lr = FT_LR,
                 .seed = 0};
    exp_parse_args(&a, argc, argv, ABOUT, 0);
    Experiment x;
    exp_setup(&x, &a, "05-fine-tuning", NULL, "fine-tune");
    ResNet34 *model = x.model;

    // region: unfreeze
    // Nothing is frozen: every convolution, BatchNorm and the new fc get gradients.
    resnet34_freeze_backbone(model, 0);
    // endregion

    // region: image-cache
    // Decode, resize and crop every image once (all cores), keep the uint8 crops on disk; each
    // epoch then only normalizes them, in the loader's worker threads.
    Cache crops[2];
    for (int s = 0; s < 2; s++) exp_image_cache(&x, s, &crops[s]);
    Source *train = source_images(&x, 0, &crops[0]);
    Source *val = source_images(&x, 1, &crops[1]);
    // endregion
    if (a.epochs == 0) {
        printf("--epochs 0: the caches are ready; nothing to train\n");
        goto done;
    }

    Adam optimizer;               // torch.optim.Adam(model.parameters(), lr=1e-4)
    adam_init(&optimizer, a.lr);
    Plateau scheduler;            // ReduceLROnPlateau(optimizer, factor=0.1, patience=2)
    plateau_init(&scheduler, 0.1, 2);
    GradScaler scaler;            // torch.cuda.amp.GradScaler(), a no-op in fp32
    scaler_init(&scaler, x.precision == PREC_FP16);
    // region: resume
    // A checkpoint holds the weights, Adam's moments and step, the scheduler, the loss scale and
    // the log so far; the shuffle of epoch e depends only on (seed, e). So continuing after epoch
    // k computes exactly what the uninterrupted run computed.
    int start = exp_resume(&x, &optimizer, &scheduler, &scaler);
    // endregion

    const int n_train = source_count(train), n_val = source_count(val);
    for (int epoch = start; epoch < a.epochs; epoch++) {
        double t0 = now_seconds();
        float lr = optimizer.lr;
        // region: training-loop
        double train_loss = 0;
        int batches = 0;
        const long steps_before = optimizer.step; // Adam steps taken (not skipped by the scaler)
        XBatch b;
        source_start(train, epoch, "train"); // a new shuffle every epoch, from the seed
        while (source_next(train, &b)) {
            // model.train(): every BatchNorm normalizes with this batch's statistics and moves
            // its running statistics towards them (momentum 0.1); validation uses the latter.
            resnet34_forward(model, b.x, b.n, PREP_CROP, PREP_CROP, /*bn_train=*/1);
            // With fp16 (GPU) the loss is scaled before backward so that small gradients survive
            // in half precision; a step whose gradients overflowed is skipped and the scale
            // halved, as torch.cuda.amp.GradScaler does. In fp32 the scale is 1 and never moves.
            train_loss += train_step(model, &optimizer, &scaler, b.label);
            batches++;
        }
        // endregion
        double val_loss;
        int correct;
        validate(&x, val, &val_loss, &correct);
        ExpRow row = {train_loss / n_train, val_loss / n_val, (double)correct / n_val, lr,
                      now_seconds() - t0};
        exp_log_epoch(&x, epoch, row);
        // A non-finite loss (fp32), or an fp16 epoch whose every step overflowed, stops the run
        // here: exit status 3, the JSON marked "diverged", no final model.
        exp_check_divergence(&x, epoch, batches, optimizer.step - steps_before);
        // region: scheduler-step
        plateau_step(&scheduler, val_loss / n_val, &optimizer.lr, /*verbose=*/1);
        // endregion
        // region: checkpoint
        exp_checkpoint(&x, &optimizer, &scheduler, &scaler); // atomic: old or new, never half
        // endregion
    }
    if (start == a.epochs) { // resumed a finished run: evaluate the final model again
        double val_loss;
        int correct;
        validate(&x, val, &val_loss, &correct);
    }
    exp_finish(&x);
done:
    source_free(train);
    source_free(val);
    for (int s = 0; s < 2; s++) cache_close(&crops[s]);
    exp_close(&x);
    return 0;
}
